"""Vertebral-body components that do not belong to the spinal column (false positives).

Sagittal lumbar MRI shows round, dark structures beside the column that a network can take for
vertebral bodies: bowel loops and the rectum in front of the sacrum, the bladder wall. Two rules,
on the body components' centroids (world mm) and volumes:

1. Off the column: a body lies further than ``offset_ratio`` x the median step between bodies (at
   least ``min_offset_mm``) from the straight line through its ``neighbours`` nearest bodies along
   the column. The line follows the lordosis and a scoliosis locally; the sacrum's first body sits
   10-20 mm behind that line below L5, under the threshold. The worst body goes first and the lines
   are fitted again, so one outlier does not hide another or condemn its neighbours.
2. A detached tail: below a gap of at least ``gap_ratio`` median steps at the column's inferior end,
   at most two bodies that are each smaller than ``tail_volume_ratio`` x the median body. A
   vertebra there is a lower sacral segment at most (it would also be named wrongly: the level
   anchor comes from the inferior end); a loop of bowel is more likely. Only the inferior end is
   checked: the pelvis is where these look-alikes lie, and the top of a field of view has
   smaller thoracic bodies whose naming is counted from below.

Fewer than ``min_bodies`` bodies: nothing is removed (too little column to tell).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .column_geometry import column_axis, median_step


@dataclass(frozen=True)
class ColumnRule:
    """Thresholds of `off_column_bodies` (see the module docstring)."""

    offset_ratio: float = 0.9
    min_offset_mm: float = 25.0
    neighbours: int = 4
    gap_ratio: float = 1.6
    tail_volume_ratio: float = 0.7
    min_bodies: int = 5

    def __post_init__(self) -> None:
        for name in ("offset_ratio", "min_offset_mm", "gap_ratio", "tail_volume_ratio"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not (self.neighbours >= 2 and self.min_bodies > self.neighbours):
            raise ValueError(f"need neighbours >= 2 and min_bodies > neighbours (a line through the others), "
                             f"got {self.neighbours} and {self.min_bodies}")


def _worst_offset(c: np.ndarray, t: np.ndarray, k: int) -> tuple[int, float]:
    """Index and distance of the body furthest from the line through its k nearest others (by t)."""
    worst, dist = -1, 0.0
    for i in range(len(c)):
        others = np.delete(np.arange(len(c)), i)
        near = others[np.argsort(np.abs(t[others] - t[i]), kind="stable")[:k]]
        design = np.stack([np.ones(len(near)), t[near]], axis=1)
        coef = np.linalg.lstsq(design, c[near], rcond=None)[0]
        d = float(np.linalg.norm(c[i] - np.array([1.0, t[i]]) @ coef))
        if d > dist:
            worst, dist = i, d
    return worst, dist


def off_column_bodies(centroids: np.ndarray, volumes: np.ndarray, rule: ColumnRule | None = None) -> dict[int, str]:
    """Body components to remove: {index: reason}, reasons 'off the column' or 'detached below the column'.

    Args:
        centroids: (N, 3) world positions, mm (any orientation convention).
        volumes: (N,) volumes, mm^3.
        rule: thresholds.
    """
    rule = rule or ColumnRule()
    centroids = np.asarray(centroids, float).reshape(-1, 3)
    volumes = np.asarray(volumes, float)
    keep = list(range(len(centroids)))
    dropped: dict[int, str] = {}
    while len(keep) >= rule.min_bodies:
        c = centroids[keep]
        t = c @ column_axis(c)
        order = np.argsort(t)
        step = median_step(c[order])
        i, dist = _worst_offset(c, t, min(rule.neighbours, len(keep) - 1))
        if dist <= max(rule.offset_ratio * step, rule.min_offset_mm):
            break
        dropped[keep.pop(i)] = "off the column"
    if len(keep) < rule.min_bodies:
        return dropped
    c = centroids[keep]
    order = np.argsort(c @ column_axis(c))  # inferior first
    steps = np.linalg.norm(np.diff(c[order], axis=0), axis=1)
    step = float(np.median(steps))
    gaps = steps[:2] >= rule.gap_ratio * step  # a gap above the lowest body, or above the two lowest
    if gaps.any():
        n_tail = int(np.argmax(gaps)) + 1
        tail, rest = order[:n_tail], order[n_tail:]
        if np.all(volumes[keep][tail] < rule.tail_volume_ratio * np.median(volumes[keep][rest])):
            dropped.update({keep[j]: "detached below the column" for j in tail})
    return dropped
