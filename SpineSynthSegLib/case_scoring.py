"""Scoring one case: the labelled superior-inferior span and `score_prediction` (raw and span).

The metrics themselves are `metrics`; this module applies them to a prediction and a reference
the way shared/data/README.md asks: every structure, and again without the predicted components
whose centre lies outside the reference's labelled span.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np
from scipy import ndimage

from .labels import SEMANTIC_CLASSES, semantic_of, vertebra_name
from .metrics import bounding_box, components_as_instances, label_boxes, label_metrics, match_instances

_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connected components

# ----------------------------------------------------------------------------- labelled span


def si_axis_of(direction: np.ndarray) -> int:
    """The array axis closest to superior-inferior, from LPS direction cosines (columns = axes)."""
    return int(np.argmax(np.abs(np.asarray(direction, dtype=float).reshape(3, 3)[2])))


def labelled_span(structures: np.ndarray, si_axis: int) -> tuple[int, int] | None:
    """Index range [lo, hi] (inclusive) of the labelled superior-inferior span; None if empty.

    ``structures`` holds one id per labelled structure (an instance map; for a semantic map pass
    `components_as_instances`). The span runs from the first to the last slice along ``si_axis``
    holding a label, widened at both ends by half the median gap between consecutive structures:
    the slices left empty between one structure's extent and the next's (structures ordered by
    centre; overlapping extents give 0; 10 slices if there is only one structure), floor/ceil to
    whole slices, clipped to the array. shared/data/README.md's scoring rule, and the same range
    as `train_data.span_weight`. The widened bound lies halfway across the gap beyond the end
    structures, so an unlabelled neighbour (the vertebra above the highest labelled one) stays
    outside. (Until 2026-11-27 the gap was read as the distance between structure centres, a
    whole vertebral period, which let such a neighbour's centre fall inside; MODEL_CARD.md.)
    """
    span = _span_unclipped(structures, si_axis)
    return None if span is None else (max(span[0], 0), min(span[1], structures.shape[si_axis] - 1))


def _span_unclipped(structures: np.ndarray, si_axis: int) -> tuple[int, int] | None:
    other = tuple(a for a in range(structures.ndim) if a != si_axis)
    boxes = label_boxes(structures)
    if not boxes:
        return None
    extents = []  # (centre, first, last) slice of each structure
    for i, box in boxes.items():
        sub = np.flatnonzero((structures[box] == i).any(axis=other)) + box[si_axis].start
        extents.append((float(sub.mean()), int(sub.min()), int(sub.max())))
    extents.sort()
    gaps = [max(nxt[1] - cur[2] - 1, 0) for cur, nxt in pairwise(extents)]
    gap = float(np.median(gaps)) if gaps else 10.0
    first, last = min(e[1] for e in extents), max(e[2] for e in extents)
    return int(np.floor(first - gap / 2)), int(np.ceil(last + gap / 2))


def labelled_span_mask(structures: np.ndarray, si_axis: int) -> np.ndarray:
    """Boolean mask (shape of ``structures``) of the `labelled_span` slices; all False if empty."""
    w = np.zeros(structures.shape[si_axis], bool)
    span = labelled_span(structures, si_axis)
    if span is not None:
        w[span[0] : span[1] + 1] = True
    shape = [1] * structures.ndim
    shape[si_axis] = -1
    return np.broadcast_to(w.reshape(shape), structures.shape).copy()


def drop_outside_span(labels: np.ndarray, span: tuple[int, int] | None, si_axis: int) -> tuple[np.ndarray, set[int]]:
    """Remove each connected component (26-connected, per label) whose centre lies outside ``span``.

    Returns the filtered copy and the set of labels that lost voxels. ``span=None`` (nothing
    labelled) removes everything.
    """
    if span is None:
        return np.zeros_like(labels), {int(v) for v in np.unique(labels) if v}
    out, changed = labels.copy(), set()
    for lab, box in label_boxes(labels).items():
        if box[si_axis].start >= span[0] and box[si_axis].stop - 1 <= span[1]:
            continue  # wholly inside: every centre is inside
        comp, n = ndimage.label(labels[box] == lab, _FULL)
        shape = [1] * labels.ndim
        shape[si_axis] = -1
        pos = np.broadcast_to(np.arange(box[si_axis].start, box[si_axis].stop).reshape(shape), comp.shape)
        centres = np.asarray(ndimage.mean(pos, comp, np.arange(1, n + 1)))
        bad = np.flatnonzero((centres < span[0]) | (centres > span[1])) + 1
        if bad.size:
            out[box][np.isin(comp, bad)] = 0
            changed.add(int(lab))
    return out, changed


# ----------------------------------------------------------------------------- one case, raw and span


def _restrict(inst: np.ndarray, keep: list[int]) -> np.ndarray:
    lut = np.zeros(int(inst.max(initial=0)) + 1, inst.dtype)
    keep = [k for k in keep if k < lut.size]
    lut[keep] = keep
    return lut[inst]


@dataclass
class _Side:
    """One label source: semantic map, instance map (given or components), id -> class, boxes."""

    semantic: np.ndarray
    instances: np.ndarray
    owner: dict[int, int]
    real_ids: bool
    sem_boxes: dict = field(default_factory=dict)
    inst_boxes: dict = field(default_factory=dict)

    @classmethod
    def make(cls, semantic: np.ndarray, instances: np.ndarray | None, classes: list[int]) -> _Side:
        if instances is None:
            instances, owner = components_as_instances(semantic, classes)
            side = cls(semantic, instances, owner, False)
        else:
            side = cls(semantic, instances, {}, True)
        side.sem_boxes, side.inst_boxes = label_boxes(semantic), label_boxes(side.instances)
        if side.real_ids:
            side.owner = {i: semantic_of(i) for i in side.inst_boxes}
        return side


def _score(pred: _Side, ref: _Side, spacing, classes, opts, reuse) -> dict[tuple[str, int], dict]:
    """Rows keyed by (kind, label); ``reuse(kind, label)`` returns a raw row when nothing changed."""
    rows: dict[tuple[str, int], dict] = {}
    dist = (opts["tolerance_mm"], opts["empty_distance"])
    todo = [c for c in classes if reuse("semantic", c) is None]
    metrics = label_metrics(pred.semantic, ref.semantic, todo, spacing, *dist, boxes=(pred.sem_boxes, ref.sem_boxes))
    for c in classes:
        rows[("semantic", c)] = reuse("semantic", c) or {"structure": SEMANTIC_CLASSES.get(c, f"class_{c}"), **metrics[c]}
    levels = pred.real_ids and ref.real_ids
    for c in classes:
        row = reuse("instances", c)
        if row is None:
            ip = [i for i, k in pred.owner.items() if k == c and i in pred.inst_boxes]
            ig = [i for i, k in ref.owner.items() if k == c and i in ref.inst_boxes]
            match = match_instances(_restrict(pred.instances, ip), _restrict(ref.instances, ig), opts["iou_threshold"])
            row = {"structure": SEMANTIC_CLASSES.get(c, f"class_{c}"), **match.quality()}
            if not levels:
                row["level_accuracy"] = None  # component ids carry no level
        rows[("instances", c)] = row
    if levels:
        ids = sorted({i for side in (pred, ref) for i in side.inst_boxes if side.owner.get(i) in classes})
        todo = [i for i in ids if reuse("level", i) is None]
        metrics = label_metrics(pred.instances, ref.instances, todo, spacing, *dist,
                                boxes=(pred.inst_boxes, ref.inst_boxes))
        for i in ids:
            rows[("level", i)] = reuse("level", i) or {"structure": vertebra_name(i), **metrics[i]}
    return rows


def score_prediction(pred_semantic: np.ndarray, ref_semantic: np.ndarray, spacing: Sequence[float], si_axis: int, *,
                     pred_instances: np.ndarray | None = None, ref_instances: np.ndarray | None = None,
                     tolerance_mm: float = 1.0, iou_threshold: float = 0.5,
                     empty_distance: float = math.inf) -> dict:
    """Score one case raw and within the reference's labelled span (shared/data/README.md rule).

    Scored classes are the semantic classes present in the reference (a reference that labels
    only vertebral bodies does not score discs). Per class: `binary_metrics` (kind 'semantic')
    and instance matching (kind 'instances': RQ, SQ, PQ; instances are the given instance maps,
    else 6-connected components of each class); per vertebra/disc id, when both instance maps
    are given: `binary_metrics` of ``pred == id`` vs ``ref == id`` (kind 'level').
    The 'span' scope drops predicted components (26-connected, per label) whose centre lies
    outside `labelled_span` of the reference structures; the reference is never changed.

    Args:
        pred_semantic, ref_semantic: semantic class maps (1 vertebral body, 2 disc, ...).
        spacing: voxel size in mm, array-axis order.
        si_axis: the array axis running superior-inferior (`si_axis_of`).
        pred_instances, ref_instances: optional instance maps (vertebra 1-28, disc 100 + id).
        tolerance_mm: NSD tolerance (mm).
        iou_threshold: instance matching threshold.
        empty_distance: distance reported when exactly one mask is empty.

    Returns:
        ``{"raw": rows, "span": rows, "span_bounds": (lo, hi) | None, "dropped": {...}}``; each row
        a dict with ``scope``, ``kind``, ``label``, ``structure`` and its metrics.
    """
    arrays = [np.asarray(a) for a in (pred_semantic, ref_semantic, pred_instances, ref_instances) if a is not None]
    if any(a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"label maps differ in shape: {[a.shape for a in arrays]}")
    # Work inside the box holding every label (+1 voxel): the same numbers, much less to scan.
    fg = np.zeros(arrays[0].shape, bool)
    for a in arrays:
        fg |= a > 0
    box = bounding_box(fg, margin=1) or tuple(slice(0, 1) for _ in fg.shape)

    def crop(a):
        return None if a is None else np.asarray(a)[box]

    ref_sem = crop(ref_semantic)
    classes = [i for i in label_boxes(ref_sem)]
    opts = {"tolerance_mm": tolerance_mm, "iou_threshold": iou_threshold, "empty_distance": empty_distance}
    ref = _Side.make(ref_sem, crop(ref_instances), classes)
    pred = _Side.make(crop(pred_semantic), crop(pred_instances), classes)
    raw = _score(pred, ref, spacing, classes, opts, lambda k, i: None)

    span = _span_unclipped(ref.instances, si_axis)
    off = box[si_axis].start
    sem_f, changed_sem = drop_outside_span(pred.semantic, span, si_axis)
    inst_f, changed_inst = (None, set()) if not pred.real_ids else drop_outside_span(pred.instances, span, si_axis)
    changed_cls = {semantic_of(i) for i in changed_inst} if pred.real_ids else changed_sem

    def reuse(kind: str, label: int) -> dict | None:
        dirty = {"semantic": label in changed_sem, "level": label in changed_inst, "instances": label in changed_cls}
        return None if dirty[kind] else dict(raw[(kind, label)])

    scoped = _score(_Side.make(sem_f, inst_f, classes), ref, spacing, classes, opts, reuse)
    order = {"semantic": 0, "instances": 1, "level": 2}

    def rows(table: dict, scope: str) -> list[dict]:
        keys = sorted(table, key=lambda k: (order[k[0]], k[1]))
        return [{"scope": scope, "kind": k, "label": i, **table[(k, i)]} for k, i in keys]

    n = arrays[0].shape[si_axis]
    bounds = None if span is None else (max(span[0] + off, 0), min(span[1] + off, n - 1))
    return {"raw": rows(raw, "raw"), "span": rows(scoped, "span"), "span_bounds": bounds,
            "dropped": {"semantic": sorted(changed_sem), "instances": sorted(changed_inst)}}
