"""The synthesis pipeline: generation label maps in, (synthetic image, target labels) out.

Reads like a method section: deform (flip + affine + elastic in one grid, optional crop) ->
intensities (per-label Gaussian mixture, or MR physics from per-label tissue parameters) ->
multiplicative bias field -> min-max normalisation -> gamma -> resolution simulation (slice
blur, coarse sampling and back) -> noise -> robust normalisation to [0, 1]. Each stage can be
switched off in `SynthesisConfig`, the one source of defaults for the CLI, the training recipes
and the Slicer module.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from ..labels import TISSUES, LabelTable
from .intensity import BiasField, Gamma, GaussianMixture, Noise, gather_per_label, minmax_normalize, robust_normalize
from .physics_contrast import SEQUENCES, PhysicsContrast
from .resolution import RandomResolution, slab_targets
from .sampling import Choice, Normal
from .spatial import RandomSpatial

MODES = ("random", "physics", "mixed")


@dataclass(frozen=True)
class SynthesisConfig:
    """Every random range of the synthesis chain, with defaults (mm, degrees, [0, 1] units).

    ``mode``: 'random' (domain randomization, SynthSeg), 'physics' (MR signal equations with
    per-tissue T1/T2/PD), or 'mixed' (each sample physics with probability ``physics_fraction``).
    """

    mode: str = "random"
    physics_fraction: float = 0.5
    # spatial (one grid)
    deform: bool = True
    scale: tuple[float, float] = (0.8, 1.2)
    rotation_deg: tuple[float, float] = (-15.0, 15.0)
    shear: tuple[float, float] = (-0.012, 0.012)
    translation_mm: tuple[float, float] = (-10.0, 10.0)
    elastic_std_mm: tuple[float, float] = (0.0, 4.0)
    elastic_points: int = 5
    flip_prob: tuple[float, float, float] = (0.5, 0.0, 0.0)
    # domain randomization intensities (SynthSeg's code ranges)
    mean: tuple[float, float] = (0.0, 250.0)
    std: tuple[float, float] = (0.0, 30.0)
    # physics intensities
    field_strengths: tuple[float, ...] = (1.5, 3.0)
    # weights of spin echo, inversion recovery (STIR), spoiled GRE, water-fat GRE
    sequence_weights: tuple[float, float, float, float] = (0.4, 0.2, 0.2, 0.2)
    texture_fraction: tuple[float, float] = (0.02, 0.1)
    # artefacts
    bias: bool = True
    bias_std: tuple[float, float] = (0.0, 0.5)
    bias_points: int = 4
    gamma: bool = True
    gamma_std: float = 0.5
    resolution: bool = True
    resolution_prob: float = 0.8
    slice_thickness_mm: tuple[float, float] = (1.0, 9.0)
    in_plane_mm: tuple[float, float] = (0.5, 1.5)
    slice_axis_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    blur_factor: float = 0.75
    # > 0: targets as drawn on the simulated thick slices (a structure labelled on a whole slice
    # where it fills this fraction of it); 0: the anatomy at the map's resolution
    slab_label_fraction: float = 0.0
    noise: bool = True
    noise_std: tuple[float, float] = (0.0, 0.05)
    rician_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.physics_fraction <= 1:
            raise ValueError(f"physics_fraction must be in [0, 1], got {self.physics_fraction}")
        if self.gamma_std < 0:
            raise ValueError(f"gamma_std must be >= 0, got {self.gamma_std}")
        if not 0 <= self.slab_label_fraction <= 1:
            raise ValueError(f"slab_label_fraction must be in [0, 1], got {self.slab_label_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthesisConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown synthesis parameters: {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def replace(self, **changes: Any) -> SynthesisConfig:
        return SynthesisConfig.from_dict({**self.to_dict(), **changes})


@dataclass
class LabelBatch:
    """Generation label maps ready for synthesis.

    Attributes:
        labels: [B, 1, X, Y, Z] long, compact ids 0..K-1.
        tissues: [B, K] long, index into `labels.TISSUES` per compact id.
        targets: [B, K] long, output label per compact id (0 = generation only).
        spacing: voxel size in mm (array-axis order), shared by the batch.
    """

    labels: torch.Tensor
    tissues: torch.Tensor
    targets: torch.Tensor
    spacing: tuple[float, float, float]

    def to(self, device: torch.device | str) -> LabelBatch:
        return LabelBatch(self.labels.to(device), self.tissues.to(device), self.targets.to(device), self.spacing)

    @classmethod
    def from_array(cls, array: np.ndarray, table: LabelTable, spacing, source: str = "label map") -> LabelBatch:
        """One label map (with its table) -> a batch of one."""
        table.check(array, source)
        ids = np.array(table.ids, dtype=np.int64)
        lut = np.zeros(int(ids.max()) + 1, np.int64)
        lut[ids] = np.arange(len(ids))
        tissues = [TISSUES.index(e.tissue) for e in table.entries]
        targets = [e.target for e in table.entries]
        return cls(
            torch.from_numpy(lut[array])[None, None],
            torch.tensor([tissues], dtype=torch.long),
            torch.tensor([targets], dtype=torch.long),
            tuple(float(s) for s in spacing),
        )

    @classmethod
    def stack(cls, items: list[LabelBatch]) -> LabelBatch:
        """Concatenate batches of equal shape and spacing, padding K with unused labels."""
        if not items:
            raise ValueError("nothing to stack")
        shapes = {tuple(i.labels.shape[2:]) for i in items}
        if len(shapes) != 1 or len({i.spacing for i in items}) != 1:
            raise ValueError(f"label maps to batch need one shape and spacing, got {shapes}")
        k = max(i.tissues.shape[1] for i in items)

        def pad(t: torch.Tensor, value: int) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, k - t.shape[1]), value=value)

        unknown = TISSUES.index("unknown")
        return cls(
            torch.cat([i.labels for i in items]),
            torch.cat([pad(i.tissues, unknown) for i in items]),
            torch.cat([pad(i.targets, 0) for i in items]),
            items[0].spacing,
        )


@dataclass
class Synthetic:
    """A synthesized batch: image [B, 1, X, Y, Z] float32 in [0, 1], target [B, 1, X, Y, Z] long."""

    image: torch.Tensor
    target: torch.Tensor
    labels: torch.Tensor
    physics: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    aux: torch.Tensor | None = None


class SynthesisPipeline(torch.nn.Module):
    """Label maps -> synthetic images with their aligned target label maps."""

    def __init__(self, config: SynthesisConfig = SynthesisConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.spatial = RandomSpatial(c.scale, c.rotation_deg, c.shear, c.translation_mm, c.elastic_std_mm, c.elastic_points, c.flip_prob)
        self.gmm = GaussianMixture(c.mean, c.std)
        self.physics = PhysicsContrast(
            field_strength=Choice(tuple(float(f) for f in c.field_strengths)),
            sequence_weights=dict(zip(SEQUENCES, c.sequence_weights)),
            std_fraction=c.texture_fraction,
        )
        self.bias = BiasField(c.bias_std, c.bias_points)
        self.gamma = Gamma(Normal(0.0, c.gamma_std))
        self.res = RandomResolution(c.resolution_prob, c.slice_thickness_mm, c.in_plane_mm, c.slice_axis_weights, c.blur_factor)
        self.noise = Noise(c.noise_std, c.rician_prob)

    def _intensities(self, batch: LabelBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-label (means, stds) [B, K] and the per-sample physics flag [B]."""
        b, k = batch.tissues.shape
        device = batch.labels.device
        c = self.config
        use_physics = torch.full((b,), c.mode == "physics", dtype=torch.bool, device=device)
        if c.mode == "mixed":
            use_physics = torch.rand((b,), generator=generator, device=generator.device).to(device) < c.physics_fraction
        means, stds = self.gmm.sample(b, k, generator, device)
        if bool(use_physics.any()):
            pm, ps = self.physics.apply(self.physics.sample(batch.tissues, generator))
            # Physics signals are in [0, 1]; the random mode's scale is irrelevant after normalisation.
            means = torch.where(use_physics[:, None], pm.to(means.dtype) * 250.0, means)
            stds = torch.where(use_physics[:, None], ps.to(stds.dtype) * 250.0, stds)
        return means, stds, use_physics

    def forward(self, batch: LabelBatch, generator: torch.Generator, out_shape=None, aux: torch.Tensor | None = None) -> Synthetic:
        """Synthesize one image per label map of ``batch`` (`deform`, then `render`).

        Args:
            out_shape: output patch shape (a random crop inside the deformation grid).
            aux: optional [B, C, X, Y, Z] float maps (e.g. loss weights) carried through the
                same spatial transform (nearest), returned as ``Synthetic.aux``.
        """
        labels, aux = self.deform(batch, generator, out_shape, aux)
        return self.render(LabelBatch(labels, batch.tissues, batch.targets, batch.spacing), generator, aux)

    def deform(self, batch: LabelBatch, generator: torch.Generator, out_shape=None, aux: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The spatial stage alone: (labels, aux) resampled (nearest) by one random deformation
        per map, cropped to ``out_shape``. Maps of different shapes deformed to one
        ``out_shape`` can then be stacked (`LabelBatch.stack`) and rendered in one call."""
        c = self.config
        labels = batch.labels
        in_shape = tuple(labels.shape[2:])
        if c.deform:
            sp = self.spatial.sample(in_shape, batch.spacing, labels.shape[0], generator, labels.device, out_shape)
            labels = self.spatial.apply(labels, sp, batch.spacing, mode="nearest")
            if aux is not None:
                aux = self.spatial.apply(aux, sp, batch.spacing, mode="nearest")
        elif out_shape is not None and tuple(out_shape) != in_shape:
            raise ValueError("a crop (out_shape) needs deform=True (the crop is part of the sampling grid)")
        return labels, aux

    def render(self, batch: LabelBatch, generator: torch.Generator, aux: torch.Tensor | None = None) -> Synthetic:
        """Every stage after the deformation, batched: per-label intensities, bias, gamma,
        resolution, noise and normalisation, each drawn per sample."""
        c = self.config
        labels = batch.labels
        b = labels.shape[0]
        device = labels.device
        means, stds, physics = self._intensities(batch, generator)
        image = GaussianMixture.apply(labels, means, stds, generator)
        image = image.clamp(min=0)
        if c.bias:
            image = BiasField.apply(image, self.bias.sample(b, generator, device))
        image = minmax_normalize(image)
        if c.gamma:
            image = Gamma.apply(image, self.gamma.sample(b, generator, device))
        res = None
        if c.resolution:
            res = self.res.sample(b, batch.spacing, generator, device)
            image = self.res.apply(image, res, batch.spacing)
        if c.noise:
            image = Noise.apply(image, *self.noise.sample(b, generator, device), generator=generator)
        image = robust_normalize(image)
        target = gather_per_label(batch.targets, labels)
        if res is not None and c.slab_label_fraction > 0:
            target = slab_targets(target, res, batch.spacing, c.slab_label_fraction)
        return Synthetic(image.float(), target, labels, physics, aux)


def config_from_json(path) -> SynthesisConfig:
    """Read a SynthesisConfig from a JSON file (keys: the dataclass fields)."""
    with open(path) as fh:
        return SynthesisConfig.from_dict(json.load(fh))
