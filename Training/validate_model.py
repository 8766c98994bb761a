"""Segment the real validation cases with a model and score them (the model card's figures).

    python Training/validate_model.py --model SpineSynthSegLib/models/default.pt \
        --shared ../shared/data --out runs/validation

Real images are used for validation only. Writes the segment outputs and an evaluate report
(per-case CSV, summary JSON, HTML) scored raw and within the labelled span (shared/data/README.md).
``--levels`` scores level naming instead, on every case with level labels (VB3: L1-L5 bodies, IVD:
L1-L2..L5-S1 discs, VB2: seven bodies, nominally T11-L5 by the upstream readme): a reference level
is right when the prediction's instance of the same name overlaps it with Dice >= 0.5 inside the
labelled span. ``--levels --relevel runs/levels/pred`` names
the levels again on an earlier run's semantic maps without the network (seconds, for rule work).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from SpineSynthSegLib.evaluate import require_all_scored, run_evaluate
from SpineSynthSegLib.inference import InferenceConfig
from SpineSynthSegLib.instances import assign_levels
from SpineSynthSegLib.io import read_image, read_labels, write_volume
from SpineSynthSegLib.segment_files import run_segment
from SpineSynthSegLib.training_data import VALIDATION_CASES


def table(rows: list[dict]) -> str:
    """Markdown table: Dice of the labelled class per case (raw / in span), level accuracy, group means."""
    lines = ["| case | structure | Dice raw | Dice span | levels right (span) |", "|---|---|---|---|---|"]
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["kind"] != "semantic" or r["scope"] != "raw":
            continue
        span = next(x for x in rows if x["case"] == r["case"] and x["kind"] == "semantic" and x["scope"] == "span" and x["structure"] == r["structure"])
        inst = next((x for x in rows if x["case"] == r["case"] and x["kind"] == "instances" and x["scope"] == "span" and x["structure"] == r["structure"]), {})
        acc = inst.get("level_accuracy", "")
        lines.append(f"| {r['case']} | {r['structure']} | {float(r['dice']):.3f} | {float(span['dice']):.3f} | {acc} |")
        groups.setdefault(r["group"], []).append((float(r["dice"]), float(span["dice"])))
    for g, vals in sorted(groups.items()):
        raw = sum(v[0] for v in vals) / len(vals)
        spn = sum(v[1] for v in vals) / len(vals)
        lines.append(f"| **{g} mean** ({len(vals)}) | | {raw:.3f} | {spn:.3f} | |")
    return "\n".join(lines)


def reference_set(data: Path, cases: list[str], tmp: Path) -> tuple[Path, Path]:
    """A folder with just these cases' labels (links) and a groups CSV (prefix = contrast group)."""
    ref = tmp / "labels"
    ref.mkdir()
    for c in cases:
        (ref / f"{c}_seg.nii.gz").symlink_to((data / "labels" / f"{c}_seg.nii.gz").resolve())
    groups = tmp / "groups.csv"
    groups.write_text("case,group\n" + "".join(f"{c},{c.split('_')[0]}\n" for c in cases))
    return ref, groups


REMAPS = ("none", "invert", "gamma0.5", "gamma2")


def remap_intensity(array: np.ndarray, kind: str) -> np.ndarray:
    """The image with its contrast changed: intensities clipped to their 0.5 / 99.5 % quantiles and
    scaled to [0, 1], then inverted (bright <-> dark: a T2-like image gets T1-like tissue order for
    fluid, disc and marrow) or raised to a power (gamma 0.5 brightens the darks, 2 darkens them)."""
    if kind not in REMAPS:
        raise ValueError(f"remap must be one of {REMAPS}, got {kind!r}")
    if kind == "none":
        return array
    lo, hi = np.percentile(array, [0.5, 99.5])
    x = np.clip((array.astype(np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return 1.0 - x if kind == "invert" else x ** float(kind.removeprefix("gamma"))


def segment_cases(model: str | Path, data: Path, cases: list[str], out: Path, tta: bool = False,
                  overlap: float | list[float] = InferenceConfig.overlap,
                  remap: str = "none") -> list:
    """Segment the real images of ``cases`` into ``out`` (validation only: never training images)."""
    images = [data / "images" / f"{c}_img.nii.gz" for c in cases]
    with tempfile.TemporaryDirectory() as tmp:
        if remap != "none":  # same file names, so outputs and scoring are unchanged
            remapped = []
            for path in images:
                vol = read_image(path)
                remapped.append(Path(tmp) / path.name)
                write_volume(vol.with_array(remap_intensity(vol.array, remap)), remapped[-1])
            images = remapped
        return run_segment(images, out, model_path=model, config=InferenceConfig(tta_flip=tta, overlap=overlap), overwrite=True,
                           progress=False)


def relevel(pred: Path, cases: list[str], out: Path) -> None:
    """Instances named by the current `assign_levels` from the semantic maps saved in ``pred``."""
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        semantic = read_labels(pred / f"{case}_img_semantic.nii.gz")
        instances, report = assign_levels(semantic)
        write_volume(semantic, out / f"{case}_img_semantic.nii.gz")
        write_volume(instances, out / f"{case}_img_instances.nii.gz")
        (out / f"{case}_img_levels.json").write_text(json.dumps(report, indent=1, default=str))


def level_cases(data: Path) -> list[str]:
    """Cases whose labels name levels: VB3 (1..5 = L1..L5), IVD (1..5 = L5-S1..L1-L2) and VB2 (seven
    bodies, nominally T11-L5: `label_converters`)."""
    return sorted(p.name.split("_img")[0] for p in (data / "images").glob("*_img.nii.gz")
                  if p.name.startswith(("VB2_", "VB3_", "IVD_")))


def _counts(levels: list[dict]) -> dict:
    out = {}
    for kind, sel in (("vertebrae", [r for r in levels if r["label"] < 100]), ("discs", [r for r in levels if r["label"] >= 100])):
        right = sum(float(r["dice"]) >= 0.5 for r in sel)
        out[kind] = {"right": right, "total": len(sel), "fraction": round(right / max(len(sel), 1), 4)}
    return out


def level_accuracy(rows: list[dict]) -> dict:
    """Vertebrae / discs named right (Dice >= 0.5 with the same-named reference level, span scope),
    over all cases and per group (case prefix)."""
    levels = [r for r in rows if r["kind"] == "level" and r["scope"] == "span" and not r["ref_empty"]]
    out = _counts(levels)
    wrong = sorted({r["case"] for r in levels if float(r["dice"]) < 0.5})
    out["cases"] = {"total": len({r["case"] for r in levels}), "with_a_wrong_level": wrong}
    groups = sorted({r["case"].split("_")[0] for r in levels})
    out["groups"] = {g: _counts([r for r in levels if r["case"].split("_")[0] == g]) for g in groups}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint to validate (not needed with --relevel)")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--out", default="runs/validation")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--overlap", type=float, nargs="+", default=InferenceConfig.overlap,
                   help="sliding-window overlap, one value or three for the RAS axes (default %(default)s)")
    p.add_argument("--remap", choices=REMAPS, default="none",
                   help="change the images' contrast first (a robustness check on contrasts the groups lack)")
    p.add_argument("--cases", nargs="*", default=list(VALIDATION_CASES))
    p.add_argument("--levels", action="store_true", help="score level naming on every VB2/VB3/IVD case")
    p.add_argument("--relevel", metavar="PRED_DIR",
                   help="with --levels: name the levels again on the semantic maps of an earlier --levels run "
                        "(PRED_DIR/<case>_img_semantic.nii.gz) instead of segmenting; for work on the level rules")
    args = p.parse_args(argv)
    data = Path(args.shared) / "lumbar_mri"
    out = Path(args.out)
    if args.relevel and not args.levels:
        p.error("--relevel needs --levels")
    if not (args.model or args.relevel):
        p.error("--model is required")
    if args.levels:
        cases = level_cases(data)
        if args.relevel:
            relevel(Path(args.relevel), cases, out / "pred")
            results = []
        else:
            results = segment_cases(args.model, data, cases, out / "pred", args.tta, args.overlap, args.remap)
        with tempfile.TemporaryDirectory() as tmp:
            ref, groups = reference_set(data, cases, Path(tmp))
            summary = run_evaluate(out / "pred", ref, out / "report", groups_csv=groups, convention_ref="reference",
                                   cases_json=data / "cases.json", plots=False)
        require_all_scored(summary)
        accuracy = level_accuracy(summary["rows"])
        (out / "level_accuracy.json").write_text(json.dumps(accuracy, indent=1))
        print(json.dumps(accuracy, indent=1))
        return 0 if all(r.status == "ok" for r in results) else 1
    results = segment_cases(args.model, data, args.cases, out / "pred", args.tta, args.overlap, args.remap)
    with tempfile.TemporaryDirectory() as tmp:
        ref, groups = reference_set(data, args.cases, Path(tmp))
        summary = run_evaluate(out / "pred", ref, out / "report", groups_csv=groups, convention_ref="reference",
                               cases_json=data / "cases.json")
    require_all_scored(summary)
    timings = {r.case: round(r.seconds, 1) for r in results}
    levels = {r.case: r.levels for r in results}
    (out / "segment_summary.json").write_text(json.dumps({"seconds": timings, "levels": levels}, indent=1, default=str))
    print(table(summary["rows"]))
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
