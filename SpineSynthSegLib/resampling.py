"""Resampling volumes with SimpleITK, in world space (any orientation, spacing in array-axis order).

Images: linear or B-spline; label maps: nearest neighbour, or 'onehot' (each label interpolated
linearly, then the arg-max: smoother boundaries than nearest neighbour).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .io import Volume, from_sitk, to_sitk

_INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "nearest": sitk.sitkNearestNeighbor,
}


def grid_for_spacing(vol: Volume, spacing) -> Volume:
    """An empty volume covering the same field of view as ``vol`` at a new spacing.

    The new grid has the same direction and the same centre; its extent is the old one rounded
    to a whole number of new voxels (so it differs by at most half a new voxel at each end).
    """
    spacing = np.asarray(spacing, dtype=float)
    if spacing.shape != (3,) or not np.isfinite(spacing).all() or (spacing <= 0).any():
        raise InputError(f"target spacing must be three positive numbers, got {spacing.tolist()}")
    old_spacing = np.asarray(vol.spacing)
    extent = np.asarray(vol.shape) * old_spacing
    size = np.maximum(1, np.round(extent / spacing)).astype(int)
    centre = np.asarray(vol.origin) + vol.direction @ ((np.asarray(vol.shape) - 1) * old_spacing / 2)
    origin = centre - vol.direction @ ((size - 1) * spacing / 2)
    return Volume(np.zeros(tuple(size), np.uint8), tuple(spacing), tuple(origin), vol.direction.copy())


def resample_to(vol: Volume, reference: Volume, method: str = "linear", fill: float = 0.0) -> Volume:
    """Resample ``vol`` onto the grid of ``reference``.

    Args:
        method: 'linear' or 'bspline' for images; 'nearest' or 'onehot' (per-label linear
            interpolation, then argmax: smoother boundaries) for label maps.
    """
    ref = to_sitk(reference.with_array(np.zeros(reference.shape, np.uint8)))
    if method == "onehot":
        return _resample_onehot(vol, ref)
    if method not in _INTERPOLATORS:
        raise InputError(f"unknown interpolation '{method}'; use linear, bspline, nearest or onehot")
    src = to_sitk(vol)
    out_type = src.GetPixelID() if method == "nearest" else sitk.sitkFloat32
    if method != "nearest":
        src = sitk.Cast(src, sitk.sitkFloat32)
    img = sitk.Resample(src, ref, sitk.Transform(), _INTERPOLATORS[method], fill, out_type)
    return from_sitk(img)


def _resample_onehot(vol: Volume, ref: sitk.Image) -> Volume:
    labels = np.unique(vol.array)
    best = None
    score = None
    for lab in labels:
        mask = to_sitk(vol.with_array((vol.array == lab).astype(np.float32)))
        prob = sitk.GetArrayFromImage(sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkLinear, 0.0))
        if best is None:
            best = np.full(prob.shape, lab, dtype=vol.array.dtype)
            score = prob
        else:
            better = prob > score
            best[better] = lab
            score = np.maximum(score, prob)
    out = from_sitk(ref)
    return out.with_array(best.transpose(2, 1, 0).copy())


def resample(vol: Volume, spacing, method: str = "linear") -> Volume:
    """Resample to a new spacing (array-axis order, mm), keeping the field of view."""
    return resample_to(vol, grid_for_spacing(vol, spacing), method)
