"""Post-processing of a semantic spine map: remove implausible components (`postprocess`).

Part of `inference.segment_volume`; it works on the RAS grid before the labels go back to the
input's geometry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .column_geometry import column_axis, disc_slot, median_step, off_chain_mm
from .column_outliers import off_column_bodies
from .io import Volume
from .labels import SEMANTIC_IDS

if TYPE_CHECKING:
    from .inference import InferenceConfig

log = logging.getLogger(__name__)


@dataclass
class _Components:
    """26-connected components of one class, labelled inside the class's bounding box."""

    box: tuple[slice, ...]
    comp: np.ndarray  # component ids on labels[box]
    counts: np.ndarray  # voxels per id (index 0: outside the class)
    keep: np.ndarray  # bool per id

    def world_centroids(self, grid: Volume) -> np.ndarray:
        """World position (mm, RAS) of the centroid of each kept component (NaN rows for the others)."""
        out = np.full((len(self.counts), 3), np.nan)
        objects = ndimage.find_objects(self.comp)
        for cid in np.flatnonzero(self.keep):
            box = objects[cid - 1]
            idx = np.nonzero(self.comp[box] == cid)
            centroid = [ix.mean() + inner.start + outer.start for ix, inner, outer in zip(idx, box, self.box)]
            out[cid] = grid.affine_ras[:3, :3] @ centroid + grid.affine_ras[:3, 3]
        return out


def _components(mask: np.ndarray, min_voxels: float) -> _Components:
    axes = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    box = tuple(slice(int(a[0]), int(a[-1]) + 1) for a in axes)
    comp, n = ndimage.label(mask[box], structure=np.ones((3, 3, 3), bool))
    counts = np.bincount(comp.ravel(), minlength=n + 1)
    keep = counts >= min_voxels
    keep[0] = False
    return _Components(box, comp, counts, keep)


def _remove_off_column(comps: dict, centroids: dict, body: int, disc: int, voxel_mm3: float, report: dict,
                       names: dict) -> None:
    """`column_outliers` on the kept body components; then the discs further than `off_chain_mm`
    from the chain of the remaining bodies (the distance at which `instances.assign_levels` drops a disc)."""
    part = comps[body]
    ids = np.flatnonzero(part.keep)
    dropped = off_column_bodies(centroids[body][ids], part.counts[ids] * voxel_mm3)
    part.keep[ids[list(dropped)]] = False
    report[names[body]]["off_column"] = len(dropped)
    for k, why in dropped.items():
        log.info("removed a vertebral-body component of %.0f mm^3 at %s mm (RAS): %s", part.counts[ids[k]] * voxel_mm3,
                 np.round(centroids[body][ids[k]]).tolist(), why)
    if not dropped or disc not in comps:
        return
    kept = ids[[k for k in range(len(ids)) if k not in dropped]]
    chain = centroids[body][kept]
    axis = column_axis(chain)
    chain = chain[np.argsort(-(chain @ axis))]  # superior first
    step = median_step(chain)
    discs = comps[disc]
    far = [c for c in np.flatnonzero(discs.keep) if disc_slot(centroids[disc][c], chain, step)[2] > off_chain_mm(step)]
    discs.keep[far] = False
    report[names[disc]]["off_column"] = len(far)


def postprocess(labels: np.ndarray, grid: Volume, config: InferenceConfig) -> tuple[np.ndarray, dict]:
    """Remove implausible components from a semantic label map (in place).

    1. Components (26-connectivity) of any class smaller than ``min_component_mm3``.
    2. Heuristic, bodies and discs only: the reference left-right position is the median world
       R coordinate of the centroids of the large vertebral-body components (at least 30 % of
       the largest; disc components when there is no body); body and disc components whose
       centroid lies more than ``max_lateral_mm`` from it are removed (false positives in
       lateral slices, e.g. bowel or iliac bone).
    3. With ``off_column``: body components off the column or detached below it (`column_outliers`:
       bowel loops, bladder wall in the pelvis), then the disc components left further than one
       body step (at least 20 mm) from the chain of the remaining bodies.

    Args:
        labels: integer class map on ``grid``.
        grid: geometry of ``labels`` (spacing in mm, affine for world positions).

    Returns:
        The cleaned labels and a report {class name: {"small": n, "lateral": n, "off_column": n,
        "removed_mm3": v}}.
    """
    voxel_mm3 = float(np.prod(grid.spacing))
    names = {v: k for k, v in SEMANTIC_IDS.items()}
    present = np.flatnonzero(np.bincount(labels.ravel()))
    comps = {int(c): _components(labels == c, config.min_component_mm3 / voxel_mm3) for c in present if c != 0}
    report = {
        names.get(c, str(c)): {"small": int((~p.keep[1:]).sum()), "lateral": 0, "off_column": 0, "removed_mm3": 0.0}
        for c, p in comps.items()
    }
    body, disc = SEMANTIC_IDS["vertebral_body"], SEMANTIC_IDS["disc"]
    ref_cls = next((c for c in (body, disc) if c in comps and comps[c].keep.any()), None)
    centroids = {c: comps[c].world_centroids(grid) for c in (body, disc) if c in comps}
    if config.max_lateral_mm is not None and ref_cls is not None:
        ref = comps[ref_cls]
        large = ref.keep & (ref.counts >= 0.3 * ref.counts[ref.keep].max())
        centre = float(np.median(centroids[ref_cls][large, 0]))
        for cls, xyz in centroids.items():
            part = comps[cls]
            with np.errstate(invalid="ignore"):
                lateral = part.keep & (np.abs(xyz[:, 0] - centre) > config.max_lateral_mm)
            part.keep &= ~lateral
            report[names.get(cls, str(cls))]["lateral"] = int(lateral.sum())
    if config.off_column and body in comps:
        _remove_off_column(comps, centroids, body, disc, voxel_mm3, report, names)
    for cls, part in comps.items():
        drop = ~part.keep
        drop[0] = False
        if drop.any():
            labels[part.box][drop[part.comp]] = 0
            report[names.get(cls, str(cls))]["removed_mm3"] = float(part.counts[drop].sum() * voxel_mm3)
    return labels, report
