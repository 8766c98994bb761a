"""Resolution simulation: slice-profile blur, then sampling at a coarse spacing and back.

Per sample, one array axis (weighted toward the sagittal slice axis, as lumbar MRI is mostly
acquired as thick sagittal slices) gets a random slice spacing up to ``slice_thickness[1]`` mm;
the other axes get a mild in-plane coarsening. The image is blurred with a Gaussian whose sigma
is ``blur_factor`` x the spacing ratio (SynthSeg, Billot et al. 2023, uses 0.75), sampled at the
coarse positions and linearly interpolated back to the original grid. Everything is batched: each
sample keeps its own axis and spacing, with a loop over the three axes, not over samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .sampling import Bernoulli, Choice, Sampler, make_sampler


@dataclass
class ResolutionParams:
    """Target spacing [B, 3] in mm (equal to the input spacing where nothing is simulated)."""

    spacing: torch.Tensor

    def coarsened_axes(self, spacing: Sequence[float]) -> list[tuple[int, torch.Tensor]]:
        """(axis, [B] spacing ratios) for each array axis that some sample coarsens."""
        out = []
        for a in range(3):
            ratio = self.spacing[:, a] / float(spacing[a])
            if bool((ratio > 1.001).any()):
                out.append((a, ratio))
        return out


def blur_matrix(sigma: torch.Tensor, n: int) -> torch.Tensor:
    """[B] Gaussian sigmas (voxels; 0 = identity) -> [B, n, n] blur operators, edges replicated."""
    b = sigma.shape[0]
    radius = max(1, math.ceil(3 * float(sigma.max()))) if b else 1
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    s = sigma.float().clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (t[None, :] / s) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)  # [B, k]
    rows = torch.arange(n, device=sigma.device)
    cols = (rows[:, None] + t.long()[None, :]).clamp(0, n - 1)  # [n, k]
    m = torch.zeros(b, n, n, device=sigma.device)
    m.scatter_add_(2, cols[None].expand(b, n, -1), kernel[:, None, :].expand(b, n, -1).contiguous())
    return m


def down_up_matrix(ratio: torch.Tensor, n: int) -> torch.Tensor:
    """[B] spacing ratios (>= 1) -> [B, n, n] operators that sample every ``ratio`` voxels
    (linear interpolation) and interpolate linearly back to all ``n`` positions."""
    b = ratio.shape[0]
    r = ratio.float().clamp(min=1.0)[:, None]
    i = torch.arange(n, device=ratio.device, dtype=torch.float32)[None, :]
    last = torch.floor((n - 1) / r) * r  # position of the last coarse sample
    k0 = torch.floor(i / r)
    w = i / r - k0
    p0 = (k0 * r).clamp(max=n - 1)
    p1 = torch.minimum((k0 + 1) * r, last).clamp(max=n - 1)
    m = torch.zeros(b, n, n, device=ratio.device)
    for p, weight in ((p0, 1 - w), (p1, w)):
        lo = torch.floor(p)
        frac = p - lo
        hi = (lo + 1).clamp(max=n - 1)
        m.scatter_add_(2, lo.long()[..., None], (weight * (1 - frac))[..., None])
        m.scatter_add_(2, hi.long()[..., None], (weight * frac)[..., None])
    return m


def slab_matrix(ratio: torch.Tensor, n: int) -> torch.Tensor:
    """[B] spacing ratios -> [B, n, n] operators: the mean over the acquired slice (slab) whose
    centre is nearest, i.e. what a voxel shows when the thick slice is resampled to the fine
    grid by repeating it (as resampled thick-slice references are). A ratio <= 1 gives the identity."""
    r = ratio.float().clamp(min=1.0)[:, None, None]
    i = torch.arange(n, device=ratio.device, dtype=torch.float32)
    # [B, n, 1]: centre of each voxel's slab; ties go up (torch.round would alternate at x.5)
    centre = torch.floor(i[None, :, None] / r + 0.5) * r
    # overlap of voxel j ([j - 0.5, j + 0.5]) with the slab [centre - r/2, centre + r/2]
    lo = torch.maximum(i[None, None, :] - 0.5, centre - r / 2)
    hi = torch.minimum(i[None, None, :] + 0.5, centre + r / 2)
    m = (hi - lo).clamp(min=0)
    return m / m.sum(2, keepdim=True)


def slab_targets(target: torch.Tensor, params: ResolutionParams, spacing: Sequence[float], fraction: float) -> torch.Tensor:
    """Targets as drawn on the simulated thick slices: [B, 1, X, Y, Z] classes (0 = background).

    Annotators outline a structure on every acquired slice where it shows, and resampling
    repeats that outline over the slice's thickness. Here each voxel takes the foreground class
    that fills at least ``fraction`` of its slab (the largest if several), else background;
    along axes the sample keeps at its native spacing nothing changes.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"slab label fraction must be in (0, 1], got {fraction}")
    thick = params.coarsened_axes(spacing)
    if not thick:
        return target
    values, index = torch.unique(target[:, 0], return_inverse=True)  # ids need not be compact
    share = torch.nn.functional.one_hot(index, len(values)).movedim(-1, 1).float()
    for a, ratio in thick:
        share = apply_along_axis(share, slab_matrix(ratio, target.shape[2 + a]), a)
    share[:, values == 0] = 0.0  # background wins only where no structure reaches the fraction
    best, cls = share.max(1, keepdim=True)
    return torch.where(best >= fraction - 1e-6, values[cls], torch.zeros_like(cls))


def apply_along_axis(x: torch.Tensor, operator: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply a per-sample linear operator [B, n, n] along array ``axis`` of [B, C, X, Y, Z]."""
    xt = x.movedim(2 + axis, -1)
    shape = xt.shape
    flat = xt.reshape(shape[0], -1, shape[-1])
    out = torch.bmm(flat, operator.transpose(1, 2).to(x.dtype))
    return out.view(shape).movedim(-1, 2 + axis)


class RandomResolution(torch.nn.Module):
    """Simulate a random acquisition resolution.

    Args:
        prob: probability per sample of simulating a lower resolution (default 0.8).
        slice_thickness: slice spacing in mm along the chosen axis (default U(1, 9)).
        in_plane: spacing in mm along the other axes (default U(0.5, 1.5); never finer than
            the input spacing).
        axis_weights: probability of each array axis being the slice axis (default 0.6 for
            axis 0, the sagittal-slice axis of a canonical RAS array, 0.2 for the others).
        blur_factor: Gaussian sigma in voxels per unit of spacing ratio (default 0.75).
    """

    def __init__(
        self,
        prob: float = 0.8,
        slice_thickness: Sampler | float | Sequence[float] = (1.0, 9.0),
        in_plane: Sampler | float | Sequence[float] = (0.5, 1.5),
        axis_weights: Sequence[float] = (0.6, 0.2, 0.2),
        blur_factor: float = 0.75,
    ) -> None:
        super().__init__()
        self.active = Bernoulli(prob)
        self.thickness = make_sampler(slice_thickness, "slice_thickness", min_value=1e-3, max_value=50)
        self.in_plane = make_sampler(in_plane, "in_plane", min_value=1e-3, max_value=20)
        if len(axis_weights) != 3:
            raise ValueError(f"axis_weights needs three weights, got {axis_weights}")
        self.axis = Choice((0.0, 1.0, 2.0), tuple(float(w) for w in axis_weights))
        if blur_factor < 0:
            raise ValueError(f"blur_factor must be >= 0, got {blur_factor}")
        self.blur_factor = float(blur_factor)

    def sample(self, batch: int, spacing: Sequence[float], generator: torch.Generator, device="cpu") -> ResolutionParams:
        native = torch.tensor(spacing, dtype=torch.float32, device=device)[None, :].expand(batch, 3)
        active = self.active.sample((batch, 1), generator, device).bool()
        axis = self.axis.sample((batch,), generator, device).long()
        thick = self.thickness.sample((batch,), generator, device)
        plane = self.in_plane.sample((batch, 3), generator, device)
        target = plane.clone()
        target[torch.arange(batch, device=device), axis] = thick
        target = torch.maximum(target, native)
        return ResolutionParams(torch.where(active, target, native))

    def apply(self, x: torch.Tensor, params: ResolutionParams, spacing: Sequence[float]) -> torch.Tensor:
        # Blur, coarse sampling and interpolation back are all linear along one axis: compose
        # them into one [n, n] operator per sample and apply it as a batched matrix product.
        for a, ratio in params.coarsened_axes(spacing):
            n = x.shape[2 + a]
            sigma = torch.where(ratio > 1.001, self.blur_factor * ratio, torch.zeros_like(ratio))
            operator = down_up_matrix(ratio, n) @ blur_matrix(sigma, n)
            x = apply_along_axis(x, operator, a)
        return x
