"""Supervising the class a training map does not label, where its absence is known.

The marginal loss (`losses.py`) merges a class a map does not label into background, so the
network is never told where that class is NOT. That leaves disc over-segmentation into the
surrounding tissue unpunished on every body-only map (real EM maps, VB2 masks, VerSe), about
60 % of the samples. But where discs can be is known from the bodies: between two adjacent
labelled bodies. `derived_disc_supervision` therefore teaches "no disc" (cross-entropy against
background) everywhere except the space between adjacent bodies (per sagittal slice, the convex
hull of the two bodies minus the bodies, widened by one slice laterally) and, in maps of real
images, the slabs beyond the end bodies: there the disc stays merged into background as before,
so the body boundary is still taught. Label-only disc maps on random backgrounds (IVDnative)
hold no body at all, so "no body" is taught everywhere there.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image

from .labels import CRANIOCAUDAL_ORDER

BODY_ONLY_SOURCES = ("real", "vb2native", "verse")
IMAGE_SOURCES = ("real", "verse")  # maps of real images: unlabelled discs lie beyond the end bodies
NO_BODY_SOURCES = ("ivdnative",)


def inter_body_region(targets: np.ndarray, lr_axis: int = 0) -> np.ndarray:
    """Where discs may lie in a body-only map: between each pair of adjacent labelled bodies.

    Per slice along ``lr_axis`` (sagittal slices for RAS arrays), the convex hull of the two
    bodies minus the bodies; the union over pairs is widened by one slice along ``lr_axis``.

    Args:
        targets: output label ids (vertebrae by their ids, 0 elsewhere).
        lr_axis: the left-right array axis.

    Returns:
        bool array of ``targets.shape``.
    """
    present = set(np.unique(targets).tolist())
    order = [v for v in CRANIOCAUDAL_ORDER if v in present]
    region = np.zeros(targets.shape, bool)
    moved = np.moveaxis(targets, lr_axis, 0)
    out = np.moveaxis(region, lr_axis, 0)  # a view: writes land in ``region``
    for upper, lower in itertools.pairwise(order):
        pair = (moved == upper) | (moved == lower)
        box = ndimage.find_objects(pair.astype(np.uint8))[0]
        sub, up, low = pair[box], moved[box] == upper, moved[box] == lower
        for k in range(sub.shape[0]):
            if up[k].any() and low[k].any():
                out[box][k] |= convex_hull_image(sub[k]) & ~sub[k]
    return ndimage.binary_dilation(region, structure=_line(lr_axis, targets.ndim)) & (targets == 0)


def _line(axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = 3
    return np.ones(shape, bool)


def derived_disc_supervision(source: str, targets: np.ndarray, labelled: list[bool], si_axis: int = 2,
                             lr_axis: int = 0) -> tuple[list[bool], np.ndarray | None]:
    """Which absent class of one map is supervised by its absence, and where it stays unknown.

    Returns ``(derived, unknown)``: ``derived`` [background, body, disc] flags the classes now
    taught as absent (cross-entropy only: they have no positive voxel for Dice); ``unknown`` is
    where that class stays merged into background as before (None: nowhere). Body-only sources:
    disc derived, unknown between adjacent bodies and, for maps of real or CT images, beyond the
    end bodies along ``si_axis`` (the neighbouring discs). Body-free label-only disc maps: body
    derived, nowhere unknown. Other maps: nothing derived.
    """
    derived = [False, False, False]
    if source in NO_BODY_SOURCES and labelled[2] and not labelled[1]:
        derived[1] = True
        return derived, None
    if source not in BODY_ONLY_SOURCES or labelled[2] or not labelled[1]:
        return derived, None
    bodies = np.isin(targets, [v for v in CRANIOCAUDAL_ORDER if v])
    if not bodies.any():
        return derived, None
    unknown = inter_body_region(targets, lr_axis)
    if source in IMAGE_SOURCES:
        other = tuple(a for a in range(targets.ndim) if a != si_axis)
        rows = np.flatnonzero(bodies.any(axis=other))
        outside = np.ones(targets.shape[si_axis], bool)
        outside[rows.min() : rows.max() + 1] = False
        shape = [1] * targets.ndim
        shape[si_axis] = -1
        unknown |= np.broadcast_to(outside.reshape(shape), targets.shape) & (targets == 0)
    derived[2] = True
    return derived, unknown
