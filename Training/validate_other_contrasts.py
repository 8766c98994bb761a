"""Score a model on real images of contrasts and anatomy outside its validation groups.

    python Training/validate_other_contrasts.py --model SpineSynthSegLib/models/default.pt \
        --shared ../shared/data --out runs/other_contrasts

The validation groups of the model card are MRI (T2 TSE, water-fat GRE, T2 FSE). This scores
the small real samples of ``shared/data/samples`` that hold vertebral-body labels, none of which
was ever a training image: a lumbar CT crop (L2-L4, TPTBox, manual sub-region labels), a cervical
T2w MRI crop (C5-C7, TPTBox) and an abdominal CT (T11-S1, 3 mm, TotalSegmentator; its labels are
that tool's predictions, and its label map was one of the training label-map sources). Writes the
segment outputs and prints a Markdown table: body and disc Dice (raw and in the labelled span,
`case_scoring.score_prediction`) and levels named right (Dice >= 0.5 with the same-named reference body).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SpineSynthSegLib.case_scoring import score_prediction, si_axis_of
from SpineSynthSegLib.inference import InferenceConfig
from SpineSynthSegLib.io import read_labels
from SpineSynthSegLib.label_converters import from_totalsegmentator, from_tptbox_subregions
from SpineSynthSegLib.labels import DISC_OFFSET
from SpineSynthSegLib.segment_files import run_segment


@dataclass(frozen=True)
class Sample:
    name: str
    what: str
    image: str
    semantic: str
    instances: str
    convention: str  # 'tptbox' or 'totalseg'


SAMPLES = (
    Sample("tptbox_ct_L2-L4", "CT, lumbar crop, manual", "tptbox_samples/sub-ct_label-22_ct.nii.gz",
           "tptbox_samples/sub-ct_seg-subreg_label-22_msk.nii.gz", "tptbox_samples/sub-ct_seg-vert_label-22_msk.nii.gz", "tptbox"),
    Sample("tptbox_mri_C5-C7", "T2w MRI, cervical crop, manual", "tptbox_samples/sub-mri_label-6_T2w.nii.gz",
           "tptbox_samples/sub-mri_seg-subreg_label-6_msk.nii.gz", "tptbox_samples/sub-mri_seg-vert_label-6_msk.nii.gz", "tptbox"),
    Sample("totalseg_ct_T11-S1", "CT 3 mm, abdomen, model-generated", "totalsegmentator_tests/example_ct.nii.gz",
           "totalsegmentator_tests/spine_report_totalseg_vertebrae_body.nii.gz",
           "totalsegmentator_tests/spine_report_totalseg.nii.gz", "totalseg"),
)


def reference(sample: Sample, root: Path) -> tuple[np.ndarray, np.ndarray]:
    """(semantic 0/1 body/2 disc, vertebra instance ids on body voxels only) of one sample."""
    sem_raw = read_labels(root / sample.semantic).array
    inst = read_labels(root / sample.instances).array.astype(np.int64)
    if sample.convention == "tptbox":
        sem = from_tptbox_subregions(sem_raw, drop_unknown=True)
        inst = np.where(inst < DISC_OFFSET, inst, 0)  # vertebrae 1-28 keep their ids; discs, endplates go
    else:
        sem = from_totalsegmentator(sem_raw, "vertebrae_body")
        inst = from_totalsegmentator(inst, "total", sacrum_as_s1=True)
    sem = np.where(np.isin(sem, (1, 2)), sem, 0)
    return sem, np.where(sem == 1, inst, 0)


def score(sample: Sample, root: Path, pred_dir: Path) -> dict:
    sem, inst = reference(sample, root)
    stem = Path(sample.image).name.removesuffix(".nii.gz")
    pred = read_labels(pred_dir / f"{stem}_semantic.nii.gz")  # on the input's exact grid
    pred_inst = read_labels(pred_dir / f"{stem}_instances.nii.gz").array
    pred_inst = np.where(pred_inst < DISC_OFFSET, pred_inst, 0)  # levels are scored on bodies
    result = score_prediction(pred.array, sem, pred.spacing, si_axis_of(pred.direction),
                              pred_instances=pred_inst, ref_instances=inst)
    row = {"case": sample.name, "what": sample.what}
    for scope in ("raw", "span"):
        for r in result[scope]:
            if r["kind"] == "semantic":
                row[f"{r['structure']}_{scope}"] = round(float(r["dice"]), 3)
    levels = [r for r in result["span"] if r["kind"] == "level" and not r.get("ref_empty")]
    row["levels_right"] = f"{sum(float(r['dice']) >= 0.5 for r in levels)}/{len(levels)}"
    return row


def table(rows: list[dict]) -> str:
    lines = ["| sample | what | body Dice raw / span | disc Dice raw / span | levels right |", "|---|---|---|---|---|"]
    for r in rows:
        body = f"{r.get('vertebral_body_raw', '-')} / {r.get('vertebral_body_span', '-')}"
        disc = f"{r.get('disc_raw', '-')} / {r.get('disc_span', '-')}" if "disc_raw" in r else "not labelled"
        lines.append(f"| {r['case']} | {r['what']} | {body} | {disc} | {r['levels_right']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--out", default="runs/other_contrasts")
    p.add_argument("--overlap", type=float, nargs="+", default=InferenceConfig.overlap,
                   help="sliding-window overlap, one value or three for the RAS axes (default %(default)s)")
    args = p.parse_args(argv)
    root = Path(args.shared) / "samples"
    if not root.is_dir():
        print(f"error: {root} not found (the samples of ../shared/data)", file=sys.stderr)
        return 2
    out = Path(args.out)
    results = run_segment([root / s.image for s in SAMPLES], out / "pred", model_path=args.model, overwrite=True, progress=False,
                          config=InferenceConfig(overlap=args.overlap))
    failed = [r for r in results if r.status != "ok"]
    if failed:
        for r in failed:
            print(f"error: {r.input}: {r.error}", file=sys.stderr)
        return 1
    rows = [score(s, root, out / "pred") for s in SAMPLES]
    (out / "scores.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
