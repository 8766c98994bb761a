"""Segmentation metrics as pure functions: overlap, surface distances, instances.

Scoring one case within its labelled span (shared/data/README.md) is `case_scoring`.

All distances are in millimetres; ``spacing`` is the voxel size in mm in **array-axis order**
(``spacing[a]`` is the size along ``mask.shape[a]``, as `io.Volume.spacing`).

Exact definitions (P = prediction, G = reference, both binary masks on one grid):

* Dice = 2|P∩G| / (|P| + |G|);  IoU = |P∩G| / |P∪G|.
* Surface S(X): the voxels of X with at least one 6-neighbour outside X (X minus its erosion
  by the 6-connected cross; voxels on the array border count as surface). Surface points are
  voxel centres at physical position ``index * spacing``.
* Directed distances D(P→G) = { min_{g∈S(G)} ‖(p − g)·spacing‖₂ : p ∈ S(P) }, likewise D(G→P).
* HD = max(max D(P→G), max D(G→P)).
* HD95 = max(P95(D(P→G)), P95(D(G→P))): the 95th percentile of *each* directed set, linear
  interpolation (numpy/torch default), then the larger of the two.
* ASSD = (Σ D(P→G) + Σ D(G→P)) / (|S(P)| + |S(G)|): the mean of the *pooled* distances.
* NSD(τ) = (#{D(P→G) ≤ τ} + #{D(G→P) ≤ τ}) / (|S(P)| + |S(G)|), τ in mm.

These are exactly MONAI's ``compute_hausdorff_distance`` (``percentile=95``),
``compute_average_surface_distance(symmetric=True)`` and ``compute_surface_dice`` (default
``use_subvoxels=False``); the tests check agreement. Other libraries give other numbers on the
same masks:

* DeepMind ``surface-distance`` (Nikolov et al. 2021) places surface elements ("surfels") on the
  voxel corners, weights every distance by its surfel area, and takes area-weighted percentiles;
  its ``compute_average_surface_distance`` returns the two directed means (callers then average
  them), and its surface Dice is area-weighted. Values typically differ by up to half a voxel.
* medpy (``medpy.metric.binary``) uses the same voxel surface, but its ``hd95`` is the 95th
  percentile of the pooled union of both directed sets (not the larger of the two, so it is
  <= ours), and its ``assd`` is the mean of the two directed means, weighting both directions
  equally whatever their surface sizes; it raises for empty masks.

Empty masks never crash and never give NaN: both empty -> Dice = IoU = NSD = 1 and
HD = HD95 = ASSD = 0 (perfect agreement on "nothing here"); exactly one empty -> Dice = IoU =
NSD = 0 and distances = ``empty_distance`` (default ``inf``: no surface to measure to). The
``pred_empty`` / ``ref_empty`` flags say when that happened, so reports can count these cases
instead of averaging them away.

Instances (Kirillov et al. 2019, panoptic segmentation; as SPINEPS reports them via panoptica):
a predicted and a reference instance match when IoU >= 0.5 (one-to-one, greedily by descending
IoU); TP = matched pairs, FP = unmatched predictions, FN = unmatched references;
RQ = TP / (TP + FP/2 + FN/2), SQ = mean IoU over TP, PQ = RQ * SQ. No instances on either side
-> RQ = SQ = PQ = 1; instances but no TP -> 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

SURFACE_METRICS = ("hd", "hd95", "assd", "nsd")
BINARY_METRICS = ("dice", "iou", *SURFACE_METRICS)
_CROSS = ndimage.generate_binary_structure(3, 1)


def _pair(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred).astype(bool, copy=False), np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def _spacing(spacing: Sequence[float] | float, ndim: int) -> np.ndarray:
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)).copy()
    if not np.isfinite(sp).all() or (sp <= 0).any():
        raise ValueError(f"spacing must be {ndim} positive numbers (mm), got {spacing}")
    return sp


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding ``mask`` (grown by ``margin``, clipped); None if empty."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        if hit.size == 0:
            return None
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


# ----------------------------------------------------------------------------- overlap


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice = 2|P∩G| / (|P| + |G|); 1.0 when both masks are empty."""
    pred, ref = _pair(pred, ref)
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int(np.count_nonzero(pred & ref)) / total


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """IoU (Jaccard) = |P∩G| / |P∪G|; 1.0 when both masks are empty."""
    pred, ref = _pair(pred, ref)
    union = int(np.count_nonzero(pred | ref))
    return 1.0 if union == 0 else int(np.count_nonzero(pred & ref)) / union


# ----------------------------------------------------------------------------- surfaces


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm), one per surface voxel of the source mask."""

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray
    pred_empty: bool
    ref_empty: bool


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """S(X): voxels of ``mask`` with a 6-neighbour outside it (array border = outside)."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, _CROSS, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float) -> SurfaceDistances:
    """Both directed surface-distance sets (exact Euclidean, mm, via a KD-tree of surface points)."""
    pred, ref = _pair(pred, ref)
    sp = _spacing(spacing, pred.ndim)
    box = bounding_box(pred | ref, margin=1)
    none = np.zeros(0)
    if box is None:
        return SurfaceDistances(none, none, True, True)
    p, g = pred[box], ref[box]
    pts_p = np.argwhere(surface_voxels(p)) * sp
    pts_g = np.argwhere(surface_voxels(g)) * sp
    if len(pts_p) == 0 or len(pts_g) == 0:
        return SurfaceDistances(none, none, len(pts_p) == 0, len(pts_g) == 0)
    p_to_g = cKDTree(pts_g, leafsize=32).query(pts_p, k=1)[0]
    g_to_p = cKDTree(pts_p, leafsize=32).query(pts_g, k=1)[0]
    return SurfaceDistances(p_to_g, g_to_p, False, False)


def summarize_surface(
    sd: SurfaceDistances, tolerance_mm: float = 1.0, empty_distance: float = math.inf
) -> dict[str, float]:
    """HD, HD95, ASSD (mm) and NSD at ``tolerance_mm`` from `surface_distances` (see module doc)."""
    if sd.pred_empty and sd.ref_empty:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0, "nsd": 1.0}
    if sd.pred_empty or sd.ref_empty:
        e = float(empty_distance)
        return {"hd": e, "hd95": e, "assd": e, "nsd": 0.0}
    a, b = sd.pred_to_ref, sd.ref_to_pred
    n = a.size + b.size
    return {
        "hd": float(max(a.max(), b.max())),
        "hd95": float(max(np.percentile(a, 95), np.percentile(b, 95))),
        "assd": float((a.sum() + b.sum()) / n),
        "nsd": float((np.count_nonzero(a <= tolerance_mm) + np.count_nonzero(b <= tolerance_mm)) / n),
    }


def hd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float, empty_distance: float = math.inf) -> float:
    """Hausdorff distance in mm (max of both directed maxima)."""
    return summarize_surface(surface_distances(pred, ref, spacing), empty_distance=empty_distance)["hd"]


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float, empty_distance: float = math.inf) -> float:
    """95th-percentile Hausdorff distance in mm: max(P95(D(P→G)), P95(D(G→P))) (MONAI's)."""
    return summarize_surface(surface_distances(pred, ref, spacing), empty_distance=empty_distance)["hd95"]


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float, empty_distance: float = math.inf) -> float:
    """Average symmetric surface distance in mm: mean of the pooled directed distances (MONAI's)."""
    return summarize_surface(surface_distances(pred, ref, spacing), empty_distance=empty_distance)["assd"]


def normalized_surface_dice(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float,
                            tolerance_mm: float = 1.0) -> float:
    """Normalised surface Dice: the fraction of both surfaces within ``tolerance_mm`` of the other."""
    if not tolerance_mm >= 0:
        raise ValueError(f"tolerance_mm must be >= 0, got {tolerance_mm}")
    return summarize_surface(surface_distances(pred, ref, spacing), tolerance_mm)["nsd"]


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float, tolerance_mm: float = 1.0,
                   empty_distance: float = math.inf) -> dict[str, float | int | bool]:
    """All of Dice, IoU, HD, HD95, ASSD, NSD for one structure, plus voxel counts and empty flags."""
    pred, ref = _pair(pred, ref)
    n_p, n_g = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    inter = int(np.count_nonzero(pred & ref)) if n_p and n_g else 0
    out: dict[str, float | int | bool] = {
        "dice": 1.0 if n_p + n_g == 0 else 2.0 * inter / (n_p + n_g),
        "iou": 1.0 if n_p + n_g == 0 else inter / (n_p + n_g - inter),
    }
    out.update(summarize_surface(surface_distances(pred, ref, spacing), tolerance_mm, empty_distance))
    out.update(pred_voxels=n_p, ref_voxels=n_g, pred_empty=n_p == 0, ref_empty=n_g == 0)
    return out


def label_metrics(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int], spacing: Sequence[float] | float,
                  tolerance_mm: float = 1.0, empty_distance: float = math.inf, boxes=None) -> dict[int, dict]:
    """`binary_metrics` of ``pred == l`` vs ``ref == l`` for each label, on per-label boxes (fast).

    ``boxes``: optional precomputed ``(label_boxes(pred), label_boxes(ref))``.
    """
    boxes_p, boxes_g = boxes if boxes is not None else (label_boxes(pred), label_boxes(ref))
    out = {}
    for lab in labels:
        box = _union_box(boxes_p.get(lab), boxes_g.get(lab), pred.shape)
        if box is None:
            out[lab] = binary_metrics(np.zeros((1, 1, 1), bool), np.zeros((1, 1, 1), bool), spacing)
            continue
        out[lab] = binary_metrics(pred[box] == lab, ref[box] == lab, spacing, tolerance_mm, empty_distance)
    return out


def label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Label id -> bounding box (slices) of every positive label present."""
    if labels.size == 0 or labels.max() <= 0:
        return {}
    objs = ndimage.find_objects(labels.astype(np.int32, copy=False))
    return {i + 1: box for i, box in enumerate(objs) if box is not None}


def _union_box(a, b, shape) -> tuple[slice, ...] | None:
    if a is None and b is None:
        return None
    boxes = [x for x in (a, b) if x is not None]
    return tuple(slice(max(min(x[d].start for x in boxes) - 1, 0), min(max(x[d].stop for x in boxes) + 1, shape[d]))
                 for d in range(len(shape)))


# ----------------------------------------------------------------------------- instances


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matching of instances at an IoU threshold.

    Attributes:
        pairs: (pred id, ref id, IoU, Dice) of each true positive.
        false_positives: unmatched predicted ids.
        false_negatives: unmatched reference ids.
    """

    pairs: list[tuple[int, int, float, float]] = field(default_factory=list)
    false_positives: list[int] = field(default_factory=list)
    false_negatives: list[int] = field(default_factory=list)

    def quality(self) -> dict[str, float | int | None]:
        """RQ, SQ, PQ, mean matched Dice, level accuracy (matched pairs with equal ids) and counts."""
        tp, fp, fn = len(self.pairs), len(self.false_positives), len(self.false_negatives)
        if tp + fp + fn == 0:
            rq = sq = sq_dice = 1.0
        else:
            rq = tp / (tp + fp / 2 + fn / 2)
            sq = float(np.mean([p[2] for p in self.pairs])) if tp else 0.0
            sq_dice = float(np.mean([p[3] for p in self.pairs])) if tp else 0.0
        acc = float(np.mean([p[0] == p[1] for p in self.pairs])) if tp else None
        return {"rq": rq, "sq": sq, "pq": rq * sq, "sq_dice": sq_dice, "level_accuracy": acc, "tp": tp, "fp": fp, "fn": fn}


def match_instances(pred: np.ndarray, ref: np.ndarray, iou_threshold: float = 0.5) -> InstanceMatch:
    """Match instance label maps (0 = background) one-to-one at IoU >= ``iou_threshold``.

    Ids need not agree (a prediction labelled L3 may match reference L4: see ``level_accuracy``).
    Candidate pairs are taken greedily by descending IoU, so each instance matches at most once
    (with a threshold > 0.5 matches are unique anyway).
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    fg = (pred > 0) | (ref > 0)
    p, g = pred[fg].astype(np.int64), ref[fg].astype(np.int64)
    ids_p, size_p = np.unique(p[p > 0], return_counts=True)
    ids_g, size_g = np.unique(g[g > 0], return_counts=True)
    both = (p > 0) & (g > 0)
    keys, inter = np.unique(p[both] * (int(g.max(initial=0)) + 1) + g[both], return_counts=True)
    sp, sg = dict(zip(ids_p.tolist(), size_p.tolist())), dict(zip(ids_g.tolist(), size_g.tolist()))
    cands = []
    for key, n in zip(keys.tolist(), inter.tolist()):
        a, b = divmod(key, int(g.max(initial=0)) + 1)
        j = n / (sp[a] + sg[b] - n)
        if j >= iou_threshold:
            cands.append((j, a, b, 2.0 * n / (sp[a] + sg[b])))
    pairs, used_p, used_g = [], set(), set()
    for j, a, b, d in sorted(cands, reverse=True):
        if a not in used_p and b not in used_g:
            pairs.append((a, b, j, d))
            used_p.add(a)
            used_g.add(b)
    return InstanceMatch(sorted(pairs, key=lambda t: t[1]), [a for a in sp if a not in used_p],
                         [b for b in sg if b not in used_g])


def components_as_instances(semantic: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, dict[int, int]]:
    """Connected components (6-connected) of each class as instances: (ids, id -> class)."""
    out = np.zeros(semantic.shape, np.int32)
    owner: dict[int, int] = {}
    for c in classes:
        comp, n = ndimage.label(semantic == c, _CROSS)
        ids = np.arange(1, n + 1) + len(owner)
        out[comp > 0] = ids[comp[comp > 0] - 1]
        owner.update({int(i): int(c) for i in ids})
    return out, owner
