"""How thick each label source draws vertebral bodies and discs (a label-convention check).

    python Training/label_geometry.py --labelmaps runs/labelmaps --shared ../shared/data

Training label maps come from several sources (real cases' manual labels, label-only masks, CT
masks, the procedural phantom) whose annotators outline discs and bodies differently; a network
trained on all of them learns a blend, and is scored against one of them. For every lumbar body
(L1-L5) and lumbar disc this prints, per source, the mean superior-inferior thickness (volume /
area of its projection along the superior-inferior axis, mm) and the projected area (mm^2),
median and quartiles over maps (the median over a map's structures first). The validation cases'
reference labels (lumbar_mri VB2/VB3 bodies, IVD discs) are the last rows. Thickness is taken along
the image's superior-inferior axis, so a structure tilted by theta reads about t / cos(theta) (the
lordotic L5-S1 disc most): compare sources, not absolute anatomy. ``--pred`` adds a model's
outputs on the validation cases (`validate_model.py`) as rows 'prediction VB2' etc.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from SpineSynthSegLib.case_scoring import si_axis_of
from SpineSynthSegLib.io import read_labels
from SpineSynthSegLib.label_converters import from_reference_case
from SpineSynthSegLib.labels import DISC_OFFSET, LabelTable, sidecar_path
from SpineSynthSegLib.training_data import VALIDATION_CASES

LUMBAR = range(20, 25)  # L1-L5; discs: 100 + the vertebra above (T12-L1 ... L5-S1)


def thickness(mask: np.ndarray, spacing, si_axis: int) -> tuple[float, float]:
    """(mean thickness along ``si_axis`` in mm, projected area in mm^2) of a binary mask."""
    spacing = np.asarray(spacing, float)
    area = float(mask.any(axis=si_axis).sum() * np.prod(np.delete(spacing, si_axis)))
    if area == 0:
        raise ValueError("empty mask")
    return float(mask.sum() * np.prod(spacing)) / area, area


def structure_medians(targets: np.ndarray, spacing, si_axis: int) -> dict[str, tuple[float, float] | None]:
    """Median (thickness, area) over the lumbar bodies and over the lumbar discs of one map."""
    ids = set(np.unique(targets).tolist())
    out: dict[str, tuple[float, float] | None] = {}
    for kind, wanted in (("body", [i for i in LUMBAR if i in ids]),
                         ("disc", [DISC_OFFSET + i for i in (19, *LUMBAR) if DISC_OFFSET + i in ids])):
        values = [thickness(targets == i, spacing, si_axis) for i in wanted]
        out[kind] = tuple(np.median(values, axis=0).tolist()) if values else None
    return out


def _add_medians(rows: dict[str, dict[str, list]], group: str, targets) -> None:
    """Append one target map's (a Volume's) body and disc medians to ``rows[group]``."""
    for kind, value in structure_medians(targets.array, targets.spacing, si_axis_of(targets.direction)).items():
        if value is not None:
            rows.setdefault(group, {}).setdefault(kind, []).append(value)


def training_rows(folder: Path) -> dict[str, dict[str, list]]:
    """source -> kind -> [(thickness, area) per map] over ``folder/manifest.json``."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rows: dict[str, dict[str, list]] = {}
    for entry in manifest["maps"]:
        path = folder / Path(entry["path"]).name
        vol = read_labels(path)
        _add_medians(rows, entry["source"], vol.with_array(LabelTable.load(sidecar_path(path)).target_map(vol.array)))
    return rows


def reference_rows(lumbar: Path) -> dict[str, dict[str, list]]:
    """The validation cases' reference labels, grouped as 'reference VB2' etc."""
    cases = json.loads((lumbar / "cases.json").read_text())
    rows: dict[str, dict[str, list]] = {}
    for case in VALIDATION_CASES:
        vol = read_labels(lumbar / "labels" / f"{case}_seg.nii.gz")
        _add_medians(rows, f"reference {case.split('_')[0]}", vol.with_array(from_reference_case(vol.array, case, cases)))
    return rows


def prediction_rows(pred: Path) -> dict[str, dict[str, list]]:
    """A model's instance outputs for the validation cases (`validate_model.py`'s ``pred`` folder),
    grouped as 'prediction VB2' etc.: whether the network draws bodies and discs as the references do."""
    rows: dict[str, dict[str, list]] = {}
    for case in VALIDATION_CASES:
        path = pred / f"{case}_img_instances.nii.gz"
        if not path.is_file():
            continue
        _add_medians(rows, f"prediction {case.split('_')[0]}", read_labels(path))
    return rows


def table(rows: dict[str, dict[str, list]]) -> str:
    def cell(values: list | None, k: int, fmt: str) -> str:
        if not values:
            return ""
        v = np.asarray(values)[:, k]
        q1, q2, q3 = np.percentile(v, [25, 50, 75])
        return f"{q2:{fmt}} ({q1:{fmt}}-{q3:{fmt}})"

    lines = ["| source | maps | body thickness mm | body area mm^2 | disc thickness mm | disc area mm^2 |",
             "|---|---|---|---|---|---|"]
    for source, kinds in rows.items():
        n = max(len(v) for v in kinds.values())
        b, d = kinds.get("body"), kinds.get("disc")
        lines.append(f"| {source} | {n} | {cell(b, 0, '.1f')} | {cell(b, 1, '.0f')} | {cell(d, 0, '.1f')} | {cell(d, 1, '.0f')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--labelmaps", default="runs/labelmaps", help="folder with manifest.json (prepare_labelmaps.py)")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--pred", type=Path, help="a validate_model.py output's pred folder: add the model's rows")
    args = p.parse_args(argv)
    folder, lumbar = Path(args.labelmaps), Path(args.shared) / "lumbar_mri"
    if not (folder / "manifest.json").is_file():
        print(f"{folder}: no manifest.json (run Training/prepare_labelmaps.py first)", file=sys.stderr)
        return 1
    rows = training_rows(folder)
    if (lumbar / "cases.json").is_file():
        rows.update(reference_rows(lumbar))
    if args.pred is not None:
        found = prediction_rows(args.pred)
        if not found:
            print(f"{args.pred}: no <case>_img_instances.nii.gz of a validation case", file=sys.stderr)
            return 1
        rows.update(found)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
