"""Where a model's remaining Dice error lies on the validation cases (a model card analysis).

    python Training/error_anatomy.py --pred runs/validation/pred --shared ../shared/data

For each validation case (`validate_model.py`'s outputs), inside the labelled span as the model
card scores it, the Dice loss 1 - Dice is split into the parts that make it up (each part is its
voxels over |reference| + |prediction|, so the parts add up to 1 - Dice):
- false positives by distance outside the reference (<= 1, 1-2, 2-4, > 4 mm);
- false negatives by depth inside the reference (<= 1, 1-2, > 2 mm) and the share of them in the
  reference's outermost ``--lateral-mm`` left-right slices (thick-slice references: a whole slab);
and the signed offset of each structure's superior, inferior, anterior and posterior edge (mm,
positive = the prediction reaches further out), mean over the columns both cross, median over
structures. A boundary one voxel off everywhere reads as a 1 mm band; a shifted prediction reads
as one edge out and the opposite edge in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from SpineSynthSegLib.case_scoring import drop_outside_span, labelled_span
from SpineSynthSegLib.io import read_labels, reorient
from SpineSynthSegLib.training_data import VALIDATION_CASES

FP_BANDS = ((0, 1), (1, 2), (2, 4), (4, np.inf))
FN_BANDS = ((0, 1), (1, 2), (2, np.inf))
EDGES = ("superior", "inferior", "anterior", "posterior")


def loss_parts(ref: np.ndarray, pred: np.ndarray, spacing, lateral_mm: float = 6.0) -> dict[str, float]:
    """Dice-loss parts of binary RAS masks (see the module docstring); keys 'fp <= 1 mm' etc."""
    if not ref.any():
        raise ValueError("empty reference")
    total = float(ref.sum() + pred.sum())
    fp, fn = pred & ~ref, ref & ~pred
    out_mm = ndimage.distance_transform_edt(~ref, sampling=spacing)
    in_mm = ndimage.distance_transform_edt(ref, sampling=spacing)
    parts = {"dice": 2.0 * float((ref & pred).sum()) / total}
    for lo, hi in FP_BANDS:
        parts[f"fp {lo}-{hi} mm"] = float((fp & (out_mm > lo) & (out_mm <= hi)).sum()) / total
    for lo, hi in FN_BANDS:
        parts[f"fn {lo}-{hi} mm"] = float((fn & (in_mm > lo) & (in_mm <= hi)).sum()) / total
    xs = np.flatnonzero(ref.any(axis=(1, 2)))
    k = max(1, round(lateral_mm / spacing[0]))
    lateral = np.zeros(ref.shape[0], bool)
    lateral[: xs[0] + k] = True
    lateral[xs[-1] - k + 1 :] = True
    parts["fn lateral"] = float(fn[lateral].sum()) / total
    return parts


def _edge_offsets(a: np.ndarray, b: np.ndarray, axis: int, spacing: float) -> tuple[float, float] | None:
    """Mean (high-end, low-end) offset of mask ``b`` against ``a`` along ``axis``, over the
    lines along it that cross both; clipped at +-5 voxels so a merged neighbour counts as 5."""
    a, b = np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1)
    both = a.any(-1) & b.any(-1)
    if not both.any():
        return None
    z = np.arange(a.shape[-1])
    hi_a, hi_b = np.where(a, z, -1).max(-1)[both], np.where(b, z, -1).max(-1)[both]
    lo_a, lo_b = np.where(a, z, z.size).min(-1)[both], np.where(b, z, z.size).min(-1)[both]
    return (float(np.mean(np.clip(hi_b - hi_a, -5, 5))) * spacing, float(np.mean(np.clip(lo_a - lo_b, -5, 5))) * spacing)


def edge_offsets(ref: np.ndarray, pred: np.ndarray, spacing, min_voxels: int = 500) -> dict[str, float]:
    """Median over reference structures (connected components of RAS ``ref``) of each edge's
    mean offset, against the prediction component that overlaps the structure most."""
    lab, n = ndimage.label(ref)
    plab, _ = ndimage.label(pred)
    rows = []
    for i in range(1, n + 1):
        m = lab == i
        if m.sum() < min_voxels:
            continue
        ids, counts = np.unique(plab[m], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if ids.size == 0:
            continue
        p = plab == ids[np.argmax(counts)]
        si, ap = _edge_offsets(m, p, 2, spacing[2]), _edge_offsets(m, p, 1, spacing[1])
        if si is not None and ap is not None:
            rows.append((*si, *ap))
    if not rows:
        return {e: float("nan") for e in EDGES}
    return dict(zip(EDGES, np.median(np.asarray(rows), axis=0).tolist()))


def case_analysis(ref_path: Path, pred_path: Path, cls: int, lateral_mm: float = 6.0) -> dict[str, float]:
    """Loss parts and edge offsets of one case, prediction restricted to the labelled span."""
    ref, _ = reorient(read_labels(ref_path), "RAS")
    pred, _ = reorient(read_labels(pred_path), "RAS")
    if ref.shape != pred.shape:
        raise ValueError(f"{pred_path}: shape {pred.shape} differs from the reference {ref.shape}")
    r = ref.array > 0
    kept, _ = drop_outside_span((pred.array == cls).astype(np.uint8), labelled_span(ref.array, 2), 2)
    p = kept > 0
    return {**loss_parts(r, p, ref.spacing, lateral_mm), **edge_offsets(r, p, ref.spacing)}


def table(results: dict[str, dict[str, float]]) -> str:
    keys = list(next(iter(results.values())))

    def row(label: str, values: dict[str, float]) -> str:
        return f"| {label} | " + " | ".join(f"{values[k]:+.2f}" if k in EDGES else f"{values[k]:.3f}" for k in keys) + " |"

    lines = ["| case | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [row(case, values) for case, values in results.items()]
    for group in sorted({c.split("_")[0] for c in results}):
        rows = [r for c, r in results.items() if c.startswith(group + "_")]
        lines.append(row(f"**{group} median**", {k: float(np.median([r[k] for r in rows])) for k in keys}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pred", type=Path, required=True, help="a validate_model.py output's pred folder")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--cases", nargs="*", default=list(VALIDATION_CASES))
    p.add_argument("--lateral-mm", type=float, default=6.0)
    args = p.parse_args(argv)
    labels = Path(args.shared) / "lumbar_mri" / "labels"
    results = {}
    for case in args.cases:
        ref, pred = labels / f"{case}_seg.nii.gz", args.pred / f"{case}_img_semantic.nii.gz"
        if not ref.is_file() or not pred.is_file():
            print(f"{case}: missing {ref if not ref.is_file() else pred}", file=sys.stderr)
            return 1
        try:
            results[case] = case_analysis(ref, pred, 2 if case.startswith("IVD") else 1, args.lateral_mm)
        except ValueError as err:  # a prediction on another grid, an empty reference
            print(f"{case}: {err}", file=sys.stderr)
            return 1
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
