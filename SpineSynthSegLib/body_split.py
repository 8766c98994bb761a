"""Separating vertebral bodies that a semantic map shows as one connected component.

Two ways bodies merge in network outputs: through a thin bridge of "body" voxels across a disc
(`split_bridged`), and through a thick rim around a disc that is only partly segmented, so that a
disc lies inside one body component (`split_at_discs`, e.g. L4 and L5 joined around the L4-L5
disc). Both work on a RAS-like grid whose axes are scaled by ``spacing`` (mm).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed


def split_bridged(mask: np.ndarray, spacing: np.ndarray, min_body_mm3: float, radius_mm: float) -> tuple[np.ndarray, int]:
    """Components of ``mask``, thin bridges cut: (labels 1..n, number of extra pieces made by splitting).

    Cores = voxels deeper than ``radius_mm`` inside the mask (Euclidean distance, mm), grown back by
    a watershed on the distance map within the mask. Limit: a body whose centre is thinner than
    twice that radius (a severe fracture) would be split too.
    """
    comps, n = ndimage.label(mask)
    if n == 0 or radius_mm <= 0:
        return comps, 0
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    sub, csub = mask[box], comps[box]
    dist = ndimage.distance_transform_edt(sub, sampling=spacing)
    cores, nc = ndimage.label(dist > radius_mm)
    voxel = float(np.prod(spacing))
    sizes = np.bincount(cores.ravel(), minlength=nc + 1) * voxel
    owner = np.zeros(nc + 1, np.int64)
    if nc:
        owner[1:] = ndimage.maximum(csub, cores, index=np.arange(1, nc + 1))
    largest = np.zeros(n + 1)
    np.maximum.at(largest, owner[1:], sizes[1:])
    # a core counts when it could be a body: >= min_body_mm3 / 4 and >= 1/4 of its component's largest
    keep = np.flatnonzero((sizes >= max(min_body_mm3 / 4, voxel)) & (sizes >= 0.25 * largest[owner]))
    keep = keep[keep > 0]
    per_comp = np.bincount(owner[keep], minlength=n + 1)
    if not (per_comp > 1).any():
        return comps, 0
    markers = np.zeros(sub.shape, np.int32)
    nxt = 1
    for c in range(1, n + 1):  # components with one core (or none) stay whole
        if per_comp[c] <= 1:
            markers[csub == c] = nxt
            nxt += 1
    for core in keep:
        if per_comp[owner[core]] > 1:
            markers[cores == core] = nxt
            nxt += 1
    out = np.zeros(mask.shape, np.int32)
    out[box] = watershed(-dist, markers, mask=sub)
    return out, int((per_comp[per_comp > 1] - 1).sum())


def _disc_plane(points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centroid, unit normal) of a disc: the principal axis of least variance."""
    centre = points_mm.mean(axis=0)
    sample = points_mm[:: max(1, len(points_mm) // 20000)] - centre
    return centre, np.linalg.eigh(np.cov(sample.T))[1][:, 0]


def split_at_discs(labels: np.ndarray, discs: np.ndarray, spacing: np.ndarray, min_body_mm3: float,
                   merged_ratio: float = 1.5, side_ratio: float = 0.3) -> tuple[np.ndarray, int]:
    """Cut body components that hold a disc between two bodies, along the disc's mid-plane.

    A component is cut when it is at least ``merged_ratio`` x the median volume of the other bodies
    (so at least three bodies are needed), a disc component touches it, and the disc's mid-plane
    leaves at least ``side_ratio`` x that median on each side. A single body next to its disc has
    (almost) all its voxels on one side of the plane; a sacrum that is large but lies below the
    L5-S1 disc is not cut either.

    Args:
        labels: body components 1..n (int array; a modified copy is returned).
        discs: disc components 1..m on the same grid.
        spacing: voxel size per array axis, mm.
        min_body_mm3: components under this volume are not bodies (not counted, not cut).

    Returns:
        (labels with the new pieces numbered after n, number of cuts).
    """
    labels = labels.copy()
    spacing = np.asarray(spacing, float)
    voxel = float(np.prod(spacing))
    disc_boxes = ndimage.find_objects(discs)
    cuts = 0
    for _ in range(8):  # one cut per pass; a component may hold several discs
        vols = np.bincount(labels.ravel()) * voxel
        bodies = [i for i in range(1, len(vols)) if vols[i] >= min_body_mm3]
        if len(bodies) < 3:
            break
        cut = False
        for b in sorted(bodies, key=lambda i: -vols[i]):
            median = float(np.median([vols[i] for i in bodies if i != b]))
            if vols[b] < merged_ratio * median:
                break  # sorted: no larger candidate follows
            idx = np.argwhere(labels == b)
            lo, hi = np.maximum(idx.min(0) - 1, 0), idx.max(0) + 2
            box = tuple(slice(a, z) for a, z in zip(lo, hi))
            touching = np.unique(discs[box][ndimage.binary_dilation(labels[box] == b)])
            pts = idx * spacing
            for d in touching[touching > 0]:
                dbox = disc_boxes[d - 1]
                didx = np.argwhere(discs[dbox] == d) + [s.start for s in dbox]
                if len(didx) < 4:
                    continue
                centre, normal = _disc_plane(didx * spacing)
                side = (pts - centre) @ normal
                if min((side > 0).sum(), (side < 0).sum()) * voxel < side_ratio * median:
                    continue
                new = labels.max() + 1
                below = idx[side < 0]
                labels[below[:, 0], below[:, 1], below[:, 2]] = new
                _tidy(labels[box], b, new)
                cuts, cut = cuts + 1, True
                break
            if cut:
                break
        if not cut:
            break
    return labels, cuts


def _tidy(view: np.ndarray, a: int, b: int) -> None:
    """After a plane cut: stray pieces of ``a`` or ``b`` (cut off from their main piece) join the other."""
    for lab, other in ((a, b), (b, a)):
        comp, n = ndimage.label(view == lab)
        if n > 1:
            keep = int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
            view[(comp > 0) & (comp != keep)] = other
