"""Geometry of a segmented spinal column: the instances' shapes and the chain of body centroids.

The building blocks of `instances.assign_levels`, in world millimetres (LPS): each instance's
volume, centroid, principal axes and border cuts (`measure_parts`), the column's axis, and where a
disc lies on the chain of body centroids (`disc_slot`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .io import Volume

S_AXIS = np.array([0.0, 0.0, 1.0])  # superior in LPS world coordinates
P_AXIS = np.array([0.0, 1.0, 0.0])  # posterior


@dataclass
class Part:
    """One instance: its voxels' geometry in world mm (LPS)."""

    label: int  # index in the working label array
    n_voxels: int
    volume_mm3: float
    centroid: np.ndarray
    axes: np.ndarray  # principal axes (columns, smallest variance first, oriented superior)
    cov: np.ndarray  # covariance of the voxel positions, mm^2
    lowest_k: int  # extent along RAS array axis 2 (voxel index; 0 = inferior border)
    highest_k: int
    cut_lo: bool = False  # cut by the inferior border of the field of view
    cut_hi: bool = False  # cut by the superior border


@dataclass
class Column:
    """The ordered bodies, the discs on their chain slots and the chain's summary."""

    bodies: list[Part]  # superior first
    discs: list[Part]
    slots: dict[int, list[tuple[Part, float]]]  # body index above (-1: above the top) -> (disc, t)
    axis: np.ndarray  # column axis, unit, oriented superior
    step: float  # median distance between consecutive body centroids, mm
    gaps: list[int]  # missed levels between consecutive bodies
    spacing_k: float  # voxel size along RAS axis 2 (S/I), mm
    score: float = 0.0  # sacrum score of the lowest body
    features: dict[str, float] | None = None
    sacral: list[Part] | None = None  # bodies below the lowest one (lower sacral segments)
    remnant_mm3: float = 0.0  # discs smaller than this are S1-S2 remnants


def ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def measure_parts(labels: np.ndarray, vol: Volume, min_mm3: float) -> tuple[list[Part], int]:
    """Geometry of each labelled instance (world mm); drops the ones under ``min_mm3``."""
    spacing = np.asarray(vol.spacing)
    voxel = float(np.prod(spacing))
    aff = vol.affine
    parts, dropped = [], 0
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        idx = np.argwhere(labels[sl] == lab)
        if len(idx) * voxel < min_mm3:
            labels[sl][labels[sl] == lab] = 0
            dropped += 1
            continue
        idx = idx + np.array([s.start for s in sl])
        world = idx @ aff[:3, :3].T + aff[:3, 3]
        centroid = world.mean(axis=0)
        sample = world[:: max(1, len(world) // 20000)] - centroid
        cov = np.cov(sample.T) if len(sample) >= 4 else np.eye(3)
        axes = np.linalg.eigh(cov)[1]
        axes = axes * np.where(S_AXIS @ axes >= 0, 1.0, -1.0)[None, :]
        lo, hi = int(idx[:, 2].min()), int(idx[:, 2].max())
        areas = np.bincount(idx[:, 2] - lo)  # a border slice holding >= 30 % of the widest one: cut
        cut_lo = lo == 0 and areas[0] >= 0.3 * areas.max()
        cut_hi = hi == labels.shape[2] - 1 and areas[-1] >= 0.3 * areas.max()
        parts.append(Part(lab, len(idx), len(idx) * voxel, centroid, axes, cov, lo, hi, bool(cut_lo), bool(cut_hi)))
    return parts, dropped


def ap_depth(part: Part, axis: np.ndarray) -> float:
    """Antero-posterior extent of a part perpendicular to its cranio-caudal ``axis``, mm.

    sqrt(12 variance): the length of a uniform segment with that variance.
    """
    ap = P_AXIS - (P_AXIS @ axis) * axis
    ap = ap / (np.linalg.norm(ap) or 1.0)
    return math.sqrt(12.0 * max(float(ap @ part.cov @ ap), 0.0))


def column_axis(centroids: np.ndarray) -> np.ndarray:
    """Principal axis of the body centroids, oriented superior (world S when fewer than 2)."""
    if len(centroids) < 2:
        return S_AXIS.copy()
    axis = np.linalg.svd(centroids - centroids.mean(axis=0))[2][0]
    return axis if axis @ S_AXIS >= 0 else -axis


def off_chain_mm(step: float) -> float:
    """How far from the body chain a disc may lie and still belong to the spine: one step, at least 20 mm."""
    return max(step, 20.0)


def median_step(chain: np.ndarray) -> float:
    """Median distance between consecutive centroids of an ordered chain, mm."""
    return float(np.median(np.linalg.norm(np.diff(chain, axis=0), axis=1)))


def disc_slot(d: np.ndarray, chain: np.ndarray, step: float) -> tuple[int, float, float]:
    """Where a disc centroid lies on the body chain (superior first).

    Returns:
        (index of the body above it, -1 above the top body; position between that body and the next
        in [0, 1]; distance to the chain in mm).
    """
    n = len(chain)
    if n == 1:
        up, down = chain[0] + S_AXIS * 0.6 * step, chain[0] - S_AXIS * 0.6 * step
    else:
        up, down = chain[0] + 0.6 * (chain[0] - chain[1]), chain[-1] + 0.6 * (chain[-1] - chain[-2])
    segments = [(up, chain[0], -1)] + [(chain[i], chain[i + 1], i) for i in range(n - 1)] + [(chain[-1], down, n - 1)]
    best = (0, 0.0, math.inf)
    for a, b, i in segments:
        ab = b - a
        t = float(np.clip((d - a) @ ab / max(ab @ ab, 1e-9), 0.0, 1.0))
        dist = float(np.linalg.norm(d - (a + t * ab)))
        if dist < best[2]:
            best = (i, t, dist)
    return best
