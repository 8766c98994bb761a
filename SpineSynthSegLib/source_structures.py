"""Structure maps from the training sources' own label formats (bodies, discs, posterior elements).

The label-only and sample maps in ../shared/data each label the spine their own way: a binary
body mask (`split_binary_bodies`), IVDnative's disc values (`ivd_native_to_discs`), whole VerSe
vertebrae (`split_body_at_canal`). These turn them into output ids plus the generation-only
structure codes `POSTERIOR` and `CORD`, which `training_data` then gives rims and cores.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from . import label_converters
from .errors import InputError
from .io import Volume
from .labels import is_vertebra, vertebra_name

log = logging.getLogger(__name__)

#: IVDnative mask values -> disc ids (L5/S1 ... L1/L2); other files are mapped by value rank.
IVD_NATIVE_DISCS = {51: 124, 102: 123, 153: 122, 204: 121, 255: 120}
#: Generation-only structure codes in the intermediate structure maps (> every output id).
POSTERIOR, CORD = 1001, 1002


def split_binary_bodies(vol: Volume, lowest: str = "L5", expected: int | None = 7, min_mm3: float = 1000.0):
    """Binary body mask -> consecutive vertebra ids ending at ``lowest``, ordered by world height.

    Components under ``min_mm3`` are dropped; returns None (warning) when the count differs from
    ``expected`` (None accepts any count): a miscount would shift every level.
    """
    lab, n = ndimage.label(vol.array > 0)
    sizes = ndimage.sum_labels(np.ones(vol.shape), lab, range(1, n + 1)) * float(np.prod(vol.spacing))
    keep = [i + 1 for i in range(n) if sizes[i] >= min_mm3]
    if not keep or (expected is not None and len(keep) != expected):
        log.warning("%d body components (expected %s): map skipped", len(keep), expected)
        return None
    centres = np.asarray(ndimage.center_of_mass(np.ones(vol.shape), lab, keep))
    world_s = (vol.affine[:3, :3] @ centres.T + vol.affine[:3, 3:])[2]  # LPS: +z is superior
    order = [keep[i] for i in np.argsort(-world_s)]
    lab[~np.isin(lab, keep)] = 0
    return vol.with_array(label_converters.from_reference(lab, order, "vertebra", lowest=lowest))


def ivd_native_to_discs(array: np.ndarray) -> np.ndarray:
    """IVDnative mask -> disc ids 124 (L5/S1) .. 120 (L1/L2); largest component per disc kept.

    The values are ranked: the five values holding >= 1 % of the largest one's voxels, ascending,
    are L5/S1 .. L1/L2 (51..255 in all files but IVDnative_05, which holds 4..18 and 10 stray
    voxels of 255); rarer values are dropped as strays.
    """
    arr = np.asarray(array).astype(np.int64)
    values, counts = np.unique(arr[arr > 0], return_counts=True)
    main = values[counts >= 0.01 * counts.max(initial=0)]
    if main.size != len(IVD_NATIVE_DISCS):
        raise InputError(f"expected 5 disc values, found {main.tolist()} (counts {counts.tolist()})")
    if main.size < values.size:
        log.info("IVDnative: stray values %s dropped", sorted(set(values.tolist()) - set(main.tolist())))
    lut = np.zeros(int(values.max()) + 1, np.int32)
    lut[main] = sorted(IVD_NATIVE_DISCS.values(), reverse=True)
    out = lut[arr]
    for disc in IVD_NATIVE_DISCS.values():
        lab, n = ndimage.label(out == disc)
        if n > 1:
            out[(lab > 0) & (lab != 1 + int(np.argmax(np.bincount(lab.ravel())[1:])))] = 0
    return out


def split_body_at_canal(instances: np.ndarray, spacing, min_canal_mm2: float = 30.0) -> np.ndarray:
    """Whole vertebrae (RAS array of ids) -> bodies keep their id, posterior elements -> `POSTERIOR`.

    Per axial slice the canal is the largest hole of the vertebra mask (>= ``min_canal_mm2``, near
    its midline, posterior to its centroid); a line fitted to the canal's anterior wall over the
    slices cuts body (anterior) from posterior elements; a vertebra without a closed ring borrows
    the others' wall. Dice against TotalSegmentator's body split 0.94-0.99 (T12-L5, 3 mm), against
    TPTBox sub-regions 0.97 / 0.99.
    """
    sp = np.asarray(spacing, float)
    ids = [int(v) for v in np.unique(instances) if is_vertebra(int(v))]
    walls = {}
    for v in ids:
        m = instances == v
        idx = np.nonzero(m)
        c_r, c_a = idx[0].mean(), idx[1].mean()
        zs, fronts = [], []
        for z in np.unique(idx[2]):
            hole = ndimage.binary_fill_holes(m[:, :, z]) & ~m[:, :, z]
            lab, n = ndimage.label(hole)
            best = (0, 0)
            for i in range(1, n + 1):
                r, a = np.nonzero(lab == i)
                if r.size * sp[0] * sp[1] >= min_canal_mm2 and abs(r.mean() - c_r) * sp[0] < 12 and a.mean() < c_a:
                    best = max(best, (r.size, int(a.max())))
            if best[0]:
                zs.append(z)
                fronts.append(best[1])
        walls[v] = (np.asarray(zs), np.asarray(fronts, float))
    all_z = np.concatenate([w[0] for w in walls.values()] + [np.zeros(0)])
    all_f = np.concatenate([w[1] for w in walls.values()] + [np.zeros(0)])
    z = np.arange(instances.shape[2])
    a_idx = np.arange(instances.shape[1])[None, :, None]
    out = instances.copy()
    for v in ids:
        zs, fronts = walls[v]
        if zs.size >= 3:
            wall = np.polyval(np.polyfit(zs, fronts, 1), z)
        elif zs.size:
            wall = np.full(z.shape, np.median(fronts))
        elif all_z.size:
            order = np.argsort(all_z)
            wall = np.interp(z, all_z[order], all_f[order])
        else:
            log.warning("vertebra %s: no spinal canal found; whole vertebra generation-only", vertebra_name(v))
            out[instances == v] = POSTERIOR
            continue
        out[(instances == v) & (a_idx <= wall[None, None, :])] = POSTERIOR
    return out
