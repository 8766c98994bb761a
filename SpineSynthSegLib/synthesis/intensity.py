"""Intensity stages: per-label Gaussian mixture, bias field, normalisation, gamma, noise.

All operate on [B, C, X, Y, Z] float tensors (label maps: long), draw their parameters for the
whole batch at once from an explicit generator, and create random fields on the input's device.
Defaults follow SynthSeg's released code (Billot et al. 2023): means U(0, 250), std U(0, 30),
bias field std U(0, 0.5) on a tiny grid then exp, gamma exp(N(0, 0.5)).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fields import upsample_field
from .sampling import Normal, Sampler, make_sampler


def gather_per_label(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Look up ``values[b, labels[b, 0, x, y, z]]``.

    Args:
        values: [B, K] per-label values.
        labels: [B, 1, X, Y, Z] long, entries in [0, K).
    Returns:
        [B, 1, X, Y, Z] tensor of ``values``' dtype.
    """
    b = labels.shape[0]
    flat = labels.reshape(b, -1)
    return torch.gather(values, 1, flat).view(labels.shape)


def _noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    if generator.device == x.device or (generator.device.type == x.device.type == "cpu"):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


class GaussianMixture(torch.nn.Module):
    """Image from labels: each label k draws N(mu_k, sigma_k) per voxel (SynthSeg's GMM).

    Args:
        mean: sampler of the per-label means (default U(0, 250)).
        std: sampler of the per-label standard deviations (default U(0, 30)).
    """

    def __init__(self, mean: Sampler | float | Sequence[float] = (0.0, 250.0), std: Sampler | float | Sequence[float] = (0.0, 30.0)) -> None:
        super().__init__()
        self.mean = make_sampler(mean, "mean")
        self.std = make_sampler(std, "std", min_value=0)

    def sample(self, batch: int, n_labels: int, generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per-label (means, stds), each [B, K]."""
        return self.mean.sample((batch, n_labels), generator, device), self.std.sample((batch, n_labels), generator, device)

    @staticmethod
    def apply(labels: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """[B, 1, X, Y, Z] long labels -> float image."""
        mu = gather_per_label(means.float(), labels)
        sd = gather_per_label(stds.float(), labels)
        return mu + sd * _noise_like(mu, generator)


class BiasField(torch.nn.Module):
    """Multiplicative smooth bias: exp of a low-resolution Gaussian field, upsampled.

    Args:
        std: std of the field's log values (default U(0, 0.5)).
        points: control points per axis (default 4: the seed's 4^3 volume).
    """

    def __init__(self, std: Sampler | float | Sequence[float] = (0.0, 0.5), points: int = 4) -> None:
        super().__init__()
        self.std = make_sampler(std, "bias std", min_value=0)
        if int(points) < 2:
            raise ValueError(f"bias points must be >= 2, got {points}")
        self.points = int(points)

    def sample(self, batch: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        """Log-field control points [B, 1, P, P, P]."""
        std = self.std.sample((batch, 1, 1, 1, 1), generator, device)
        return Normal(0.0, 1.0).sample((batch, 1) + (self.points,) * 3, generator, device) * std

    @staticmethod
    def apply(x: torch.Tensor, log_field: torch.Tensor) -> torch.Tensor:
        return x * torch.exp(upsample_field(log_field.to(x.dtype), x.shape[2:]))


def minmax_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rescale each sample (over C, X, Y, Z) to [0, 1]."""
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (x.dim() - 1)))
    return (x - lo) / (hi - lo).clamp(min=eps)


def robust_normalize(x: torch.Tensor, lower: float = 0.005, upper: float = 0.995, max_samples: int = 65_536) -> torch.Tensor:
    """Map each sample's [lower, upper] intensity quantiles to [0, 1] and clip.

    The same normalisation is used at inference, so synthetic and real images meet in one range.
    Quantiles are estimated on an evenly strided subset of at most ``max_samples`` voxels.
    """
    flat = x.reshape(x.shape[0], -1)
    step = max(1, flat.shape[1] // max_samples)
    sub = flat[:, ::step].float()
    n = sub.shape[1]
    # kthvalue is a selection, not a sort: the order statistics nearest to the quantiles.
    lo = sub.kthvalue(max(1, round(lower * (n - 1)) + 1), dim=1).values
    hi = sub.kthvalue(max(1, round(upper * (n - 1)) + 1), dim=1).values
    shape = (-1, *([1] * (x.dim() - 1)))
    lo, hi = lo.view(shape).to(x.dtype), hi.view(shape).to(x.dtype)
    return ((x - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)


class Gamma(torch.nn.Module):
    """Voxel-wise exponentiation x ** exp(g), g ~ N(0, std) (default std 0.5); x in [0, 1]."""

    def __init__(self, log_gamma: Sampler | float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.log_gamma = make_sampler(log_gamma if log_gamma is not None else Normal(0.0, 0.5), "log_gamma")

    def sample(self, batch: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
        return torch.exp(self.log_gamma.sample((batch,), generator, device))

    @staticmethod
    def apply(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0).pow(gamma.view(-1, *([1] * (x.dim() - 1))).to(x.dtype))


class Noise(torch.nn.Module):
    """Additive Gaussian noise, or Rician (magnitude of complex Gaussian) noise.

    Args:
        std: noise std relative to the [0, 1] image range (default U(0, 0.05)).
        rician_prob: probability per sample of Rician instead of Gaussian noise (default 0.5).
    """

    def __init__(self, std: Sampler | float | Sequence[float] = (0.0, 0.05), rician_prob: float = 0.5) -> None:
        super().__init__()
        self.std = make_sampler(std, "noise std", min_value=0)
        self.rician = make_sampler((0.0, 1.0), "rician")  # drawn, then thresholded by rician_prob
        if not 0 <= rician_prob <= 1:
            raise ValueError(f"rician_prob must be in [0, 1], got {rician_prob}")
        self.rician_prob = float(rician_prob)

    def sample(self, batch: int, generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        return self.std.sample((batch,), generator, device), (self.rician.sample((batch,), generator, device) < self.rician_prob)

    @staticmethod
    def apply(x: torch.Tensor, std: torch.Tensor, rician: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        s = std.view(shape).to(x.dtype)
        n1 = _noise_like(x, generator) * s
        if not bool(rician.any()):
            return x + n1
        n2 = _noise_like(x, generator) * s
        magnitude = torch.sqrt((x + n1) ** 2 + n2**2)
        return torch.where(rician.view(shape), magnitude, x + n1)
