"""Random parameter samplers drawing whole batches at once from an explicit `torch.Generator`.

A parameter accepts a sampler, a number (fixed) or a ``(lo, hi)`` pair (uniform); `make_sampler`
does the conversion and validates ranges. There is no global RNG: every draw takes a generator,
so the same seed replays the same samples (cf. cornucopia's ``Sampler.make``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


class Sampler:
    """Base class: ``sample(shape, generator, device)`` returns a float tensor of ``shape``."""

    def sample(self, shape: Sequence[int], generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        raise NotImplementedError

    def _rand(self, shape, generator, device) -> torch.Tensor:
        # Draw on the generator's device, then move: keeps CPU and CUDA runs seed-compatible.
        return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)

    @property
    def is_zero(self) -> bool:
        """True when the sampler always returns 0 (used to skip a disabled stage)."""
        return False


@dataclass(frozen=True)
class Fixed(Sampler):
    value: float

    def sample(self, shape, generator, device="cpu"):
        return torch.full(tuple(shape), float(self.value), device=device)

    @property
    def is_zero(self) -> bool:
        return self.value == 0


@dataclass(frozen=True)
class Uniform(Sampler):
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.hi < self.lo:
            raise ValueError(f"Uniform range must be finite with lo <= hi, got ({self.lo}, {self.hi})")

    def sample(self, shape, generator, device="cpu"):
        return self.lo + (self.hi - self.lo) * self._rand(shape, generator, device)

    @property
    def is_zero(self) -> bool:
        return self.lo == 0 and self.hi == 0


@dataclass(frozen=True)
class LogUniform(Sampler):
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (0 < self.lo <= self.hi < math.inf):
            raise ValueError(f"LogUniform needs 0 < lo <= hi, got ({self.lo}, {self.hi})")

    def sample(self, shape, generator, device="cpu"):
        lo, hi = math.log(self.lo), math.log(self.hi)
        return torch.exp(lo + (hi - lo) * self._rand(shape, generator, device))


@dataclass(frozen=True)
class Normal(Sampler):
    mean: float
    std: float

    def __post_init__(self) -> None:
        if self.std < 0 or not math.isfinite(self.std):
            raise ValueError(f"Normal std must be >= 0, got {self.std}")

    def sample(self, shape, generator, device="cpu"):
        noise = torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)
        return self.mean + self.std * noise

    @property
    def is_zero(self) -> bool:
        return self.mean == 0 and self.std == 0


@dataclass(frozen=True)
class RandInt(Sampler):
    """Integers uniform in [lo, hi] (both inclusive), returned as float."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if self.hi < self.lo:
            raise ValueError(f"RandInt needs lo <= hi, got ({self.lo}, {self.hi})")

    def sample(self, shape, generator, device="cpu"):
        return torch.floor(self.lo + (self.hi - self.lo + 1) * self._rand(shape, generator, device)).clamp(max=self.hi)


@dataclass(frozen=True)
class Choice(Sampler):
    """One of ``values`` with optional ``weights`` (normalised)."""

    values: tuple[float, ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError("Choice needs at least one value")
        if self.weights is not None and (len(self.weights) != len(self.values) or min(self.weights) < 0 or sum(self.weights) <= 0):
            raise ValueError(f"Choice weights {self.weights} do not fit values {self.values}")

    def sample(self, shape, generator, device="cpu"):
        w = torch.tensor(self.weights if self.weights else [1.0] * len(self.values), dtype=torch.float64)
        cdf = torch.cumsum(w / w.sum(), 0).to(device=device, dtype=torch.float32)
        u = self._rand(shape, generator, device)
        idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(max=len(self.values) - 1)
        return torch.tensor(self.values, dtype=torch.float32, device=device)[idx]


@dataclass(frozen=True)
class Bernoulli(Sampler):
    """1.0 with probability ``p``, else 0.0."""

    p: float

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"Bernoulli p must be in [0, 1], got {self.p}")

    def sample(self, shape, generator, device="cpu"):
        return (self._rand(shape, generator, device) < self.p).float()

    @property
    def is_zero(self) -> bool:
        return self.p == 0


def make_sampler(value: Sampler | float | Sequence[float], name: str = "parameter", *, min_value: float | None = None, max_value: float | None = None) -> Sampler:
    """Turn a number (fixed), a ``(lo, hi)`` pair (uniform) or a sampler into a `Sampler`.

    Raises:
        ValueError / TypeError naming ``name`` when the value or its range is invalid.
    """
    if isinstance(value, Sampler):
        sampler = value
    elif isinstance(value, bool):
        raise TypeError(f"{name}: expected a number, range or sampler, got {value!r}")
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{name}: must be finite, got {value}")
        sampler = Fixed(float(value))
    elif isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        try:
            sampler = Uniform(float(value[0]), float(value[1]))
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    else:
        raise TypeError(f"{name}: expected a number, a (lo, hi) pair or a Sampler, got {value!r}")
    bounds = _bounds(sampler)
    if bounds is not None:
        lo, hi = bounds
        if min_value is not None and lo < min_value:
            raise ValueError(f"{name}: values must be >= {min_value}, got range ({lo}, {hi})")
        if max_value is not None and hi > max_value:
            raise ValueError(f"{name}: values must be <= {max_value}, got range ({lo}, {hi})")
    return sampler


def _bounds(sampler: Sampler) -> tuple[float, float] | None:
    if isinstance(sampler, Fixed):
        return sampler.value, sampler.value
    if isinstance(sampler, (Uniform, LogUniform, RandInt)):
        return sampler.lo, sampler.hi
    if isinstance(sampler, Choice):
        return min(sampler.values), max(sampler.values)
    if isinstance(sampler, Bernoulli):
        return 0.0, 1.0
    return None


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded explicitly (a random seed is drawn from the OS when ``seed`` is None)."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen
