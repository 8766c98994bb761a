"""Class probabilities from the network's grid onto the input's grid, then the arg-max.

Probabilities (not labels) are interpolated, so boundaries land at sub-voxel precision in the
input's exact geometry; the mapping goes through world space, so any orientation works.
Axis-aligned grid pairs take three 1D passes; oblique ones one trilinear `grid_sample`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .io import Volume


def argmax_on_grid(probs: torch.Tensor, source: Volume, target: Volume, chunk_voxels: int = 1 << 18) -> np.ndarray:
    """Interpolate class probabilities linearly from one grid to another, then arg-max.

    The mapping is exact in world space (target index -> LPS -> source index, from the two
    affines; any directions). Target points up to the source's border are clamped to it.

    Args:
        probs: [C, X, Y, Z] probabilities on the ``source`` grid (any device).
        source, target: the two grids (only their geometry is used).
        chunk_voxels: target voxels per interpolation call (bounds the memory).

    Returns:
        uint8 class indices with the target's shape (ties go to the lower class, background).
    """
    m = _index_map(probs, source, target)
    if np.allclose(m[:3, :3], np.diag(np.diag(m[:3, :3])), atol=1e-9):
        return _argmax_separable(probs, m, target.shape, chunk_voxels)
    return _argmax_grid_sample(probs, m, target.shape, chunk_voxels)


def _index_map(probs: torch.Tensor, source: Volume, target: Volume) -> np.ndarray:
    """4x4 target index -> source index, after checking that ``probs`` lie on ``source``."""
    if tuple(probs.shape[1:]) != source.shape:
        raise ValueError(f"probabilities {tuple(probs.shape)} do not match the source grid {source.shape}")
    return np.linalg.inv(source.affine) @ target.affine


def _grid_sample_chunks(probs: torch.Tensor, m: np.ndarray, shape: tuple[int, ...], chunk_voxels: int):
    """Yield ``(x0, [C, rows, Y, Z])``: trilinear samples of ``probs`` at the target grid ``shape``
    mapped through ``m`` (4x4, target index -> source index), a slab of target rows at a time."""
    size = np.asarray(probs.shape[1:], float)
    scale = np.where(size > 1, 2.0 / np.maximum(size - 1, 1), 0.0)  # align_corners=True
    a = torch.as_tensor(scale[:, None] * m[:3, :3], dtype=torch.float32, device=probs.device)
    b = torch.as_tensor(scale * m[:3, 3] - (size > 1), dtype=torch.float32, device=probs.device)
    nx, ny, nz = shape
    j = torch.arange(ny, dtype=torch.float32, device=probs.device)[None, :, None]
    k = torch.arange(nz, dtype=torch.float32, device=probs.device)[None, None, :]
    step = max(1, chunk_voxels // max(1, ny * nz))
    src = probs[None].float()
    for x0 in range(0, nx, step):
        i = torch.arange(x0, min(nx, x0 + step), dtype=torch.float32, device=probs.device)[:, None, None]
        coords = [a[d, 0] * i + a[d, 1] * j + a[d, 2] * k + b[d] for d in range(3)]
        grid = torch.stack(torch.broadcast_tensors(coords[2], coords[1], coords[0]), dim=-1)[None]
        yield x0, F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def _argmax_grid_sample(probs: torch.Tensor, m: np.ndarray, shape: tuple[int, ...], chunk_voxels: int) -> np.ndarray:
    """`argmax_on_grid` for any index mapping ``m`` (4x4, target -> source): trilinear grid_sample."""
    out = np.empty(shape, np.uint8)
    for x0, sampled in _grid_sample_chunks(probs, m, shape, chunk_voxels):
        out[x0 : x0 + sampled.shape[1]] = _argmax0(sampled).cpu().numpy()
    return out


def probabilities_on_grid(probs: torch.Tensor, source: Volume, target: Volume, chunk_voxels: int = 1 << 18) -> np.ndarray:
    """The probabilities themselves on ``target``'s grid ([C, *target.shape] float32), interpolated
    as `argmax_on_grid` does (trilinear in world space, clamped at the border); memory C x target.
    For analysis (thresholds, calibration); inference keeps only the arg-max."""
    m = _index_map(probs, source, target)
    out = np.empty((probs.shape[0], *target.shape), np.float32)
    for x0, sampled in _grid_sample_chunks(probs, m, target.shape, chunk_voxels):
        out[:, x0 : x0 + sampled.shape[1]] = sampled.cpu().numpy()
    return out


def _argmax0(p: torch.Tensor) -> torch.Tensor:
    """uint8 arg-max over dim 0 (first class wins ties); elementwise, much faster than
    ``Tensor.argmax(0)`` on the CPU for a few classes."""
    best, idx = p[0].clone(), torch.zeros(p.shape[1:], dtype=torch.uint8, device=p.device)
    for c in range(1, p.shape[0]):
        better = p[c] > best
        idx.masked_fill_(better, c)
        torch.maximum(best, p[c], out=best)
    return idx


def _lerp_axis(x: torch.Tensor, dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``dim`` at fractional indices ``coords`` (clamped)."""
    n = x.shape[dim]
    g = coords.clamp(0, n - 1)
    i0 = g.floor().long().clamp(max=max(n - 2, 0))
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * x.dim()
    shape[dim] = -1
    w = (g - i0).view(shape).to(x.dtype)
    return torch.lerp(x.index_select(dim, i0), x.index_select(dim, i1), w)


def _argmax_separable(probs: torch.Tensor, m: np.ndarray, shape: tuple[int, ...], chunk_voxels: int) -> np.ndarray:
    """`argmax_on_grid` for axis-aligned grids (diagonal index mapping): three 1D passes."""
    dev = probs.device
    coords = [
        torch.arange(n, dtype=torch.float64, device=dev).mul(float(m[d, d])).add(float(m[d, 3])).float()
        for d, n in enumerate(shape)
    ]
    out = np.empty(shape, np.uint8)
    step = max(1, chunk_voxels // max(1, shape[1] * shape[2]))
    src = probs.float()
    for x0 in range(0, shape[0], step):
        part = _lerp_axis(src, 1, coords[0][x0 : x0 + step])
        part = _lerp_axis(_lerp_axis(part, 2, coords[1]), 3, coords[2])
        out[x0 : x0 + step] = _argmax0(part).cpu().numpy()
    return out
