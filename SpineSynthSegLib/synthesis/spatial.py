"""Random spatial transform: flips, affine and elastic deformation in ONE sampling grid.

The affine (scaling, rotation, shear, translation, flips) is built in millimetres, so rotations
stay rigid on anisotropic voxels; the elastic displacement is a small Gaussian random field
(a few control points per axis, in mm) upsampled trilinearly to the output grid (SynthSeg,
Billot et al. 2023, Med Image Anal 86:102789). Both are summed into one grid, and label maps
(nearest) and images or quantitative maps (linear) are resampled through the same grid, so
they stay aligned. The output grid can be a crop (``out_shape``) at a random position: cropping
costs nothing extra because it is part of the grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .fields import upsample_field
from .sampling import Bernoulli, Sampler, make_sampler


@dataclass
class SpatialParams:
    """One batch of spatial parameters (replayable with `RandomSpatial.apply`).

    Attributes:
        matrix: [B, 3, 3] output-mm -> input-mm linear map (includes flips).
        shift: [B, 3] translation in mm of the output centre from the input centre.
        field: [B, 3, P, P, P] elastic displacements in mm at control points spread evenly over
            the output grid (corners included), or None.
        out_shape: output grid shape.
    """

    matrix: torch.Tensor
    shift: torch.Tensor
    field: torch.Tensor | None
    out_shape: tuple[int, int, int]


def _rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """[B, 3] angles (radians) about axes 0, 1, 2 -> [B, 3, 3] rotation matrices."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])
    rx = torch.stack([one, zero, zero, zero, c[:, 0], -s[:, 0], zero, s[:, 0], c[:, 0]], -1).view(-1, 3, 3)
    ry = torch.stack([c[:, 1], zero, s[:, 1], zero, one, zero, -s[:, 1], zero, c[:, 1]], -1).view(-1, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], zero, s[:, 2], c[:, 2], zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


class RandomSpatial(torch.nn.Module):
    """Random flips + affine + elastic deformation of [B, C, X, Y, Z] volumes.

    Args:
        scale: scaling factor per axis (default U(0.8, 1.2), SynthSeg).
        rotation: rotation angle per axis in degrees (default U(-15, 15)).
        shear: shear coefficient per off-diagonal term (default U(-0.012, 0.012), SynthSeg).
        translation: shift of the output centre in mm (default U(-10, 10)); with a crop the
            shift is additionally drawn within the room the crop leaves.
        elastic_std: std of the elastic control-point displacements in mm (default U(0, 4)).
        elastic_points: control points per axis of the elastic field (default 5).
        flip_prob: flip probability per array axis (default 0.5 across the sagittal slices,
            i.e. axis 0 of a canonical RAS array; 0 elsewhere: spines are not upside down).
    """

    def __init__(
        self,
        scale: Sampler | float | Sequence[float] = (0.8, 1.2),
        rotation: Sampler | float | Sequence[float] = (-15.0, 15.0),
        shear: Sampler | float | Sequence[float] = (-0.012, 0.012),
        translation: Sampler | float | Sequence[float] = (-10.0, 10.0),
        elastic_std: Sampler | float | Sequence[float] = (0.0, 4.0),
        elastic_points: int = 5,
        flip_prob: Sequence[float] = (0.5, 0.0, 0.0),
    ) -> None:
        super().__init__()
        self.scale = make_sampler(scale, "scale", min_value=1e-3)
        self.rotation = make_sampler(rotation, "rotation", min_value=-180, max_value=180)
        self.shear = make_sampler(shear, "shear", min_value=-1, max_value=1)
        self.translation = make_sampler(translation, "translation")
        self.elastic_std = make_sampler(elastic_std, "elastic_std", min_value=0)
        if int(elastic_points) < 2:
            raise ValueError(f"elastic_points must be >= 2, got {elastic_points}")
        self.elastic_points = int(elastic_points)
        if len(flip_prob) != 3:
            raise ValueError(f"flip_prob needs one probability per axis, got {flip_prob}")
        self.flips = [Bernoulli(float(p)) for p in flip_prob]

    def sample(
        self,
        in_shape: Sequence[int],
        spacing: Sequence[float],
        batch: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        out_shape: Sequence[int] | None = None,
    ) -> SpatialParams:
        """Draw parameters for ``batch`` samples of an input grid ``in_shape`` at ``spacing`` mm."""
        out_shape = tuple(int(s) for s in (out_shape or in_shape))
        b = batch
        scale = self.scale.sample((b, 3), generator, device)
        angles = self.rotation.sample((b, 3), generator, device) * (math.pi / 180)
        shear = self.shear.sample((b, 6), generator, device)
        flips = torch.stack([f.sample((b,), generator, device) for f in self.flips], 1)
        shear_m = torch.eye(3, device=device).repeat(b, 1, 1)
        idx = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
        for n, (i, j) in enumerate(idx):
            shear_m[:, i, j] = shear[:, n]
        signs = 1 - 2 * flips  # -1 where flipped
        matrix = _rotation_matrices(angles) @ shear_m @ torch.diag_embed(scale * signs)
        # Random crop position: anywhere the output grid fits, plus the free translation.
        room = (torch.tensor(in_shape, device=device) - torch.tensor(out_shape, device=device)).clamp(min=0)
        room_mm = room * torch.tensor(spacing, dtype=torch.float32, device=device) / 2
        crop_shift = (2 * torch.rand((b, 3), generator=generator, device=generator.device).to(device) - 1) * room_mm
        shift = crop_shift + self.translation.sample((b, 3), generator, device)
        field = None
        if not self.elastic_std.is_zero:
            std = self.elastic_std.sample((b, 1, 1, 1, 1), generator, device)
            pts = (b, 3) + (self.elastic_points,) * 3
            field = torch.randn(pts, generator=generator, device=generator.device).to(device) * std
        return SpatialParams(matrix, shift, field, out_shape)

    def grid(self, params: SpatialParams, in_shape: Sequence[int], spacing: Sequence[float]) -> torch.Tensor:
        """The sampling grid [B, X, Y, Z, 3] in grid_sample's normalised coordinates.

        Output-normalised -> input-normalised coordinates is one affine map (``F.affine_grid``,
        in grid_sample's reversed (z, y, x) axis order) plus the elastic displacement (mm / half
        extent of the input), both evaluated on the control points and upsampled together.
        """
        device = params.matrix.device
        b = params.matrix.shape[0]
        sp = torch.tensor(spacing, dtype=torch.float32, device=device)
        half_in = (torch.tensor(in_shape, dtype=torch.float32, device=device) - 1).clamp(min=1) / 2 * sp
        half_out = (torch.tensor(params.out_shape, dtype=torch.float32, device=device) - 1).clamp(min=1) / 2 * sp
        linear = params.matrix * half_out[None, None, :] / half_in[None, :, None]
        shift = params.shift / half_in[None, :]
        theta = torch.cat([linear.flip(1).flip(2), shift.flip(1)[:, :, None]], 2)  # reversed axis order
        # The affine part is linear, so evaluating it on the control-point lattice and upsampling
        # trilinearly is exact; one upsampling then serves affine + elastic together.
        points = params.field.shape[2:] if params.field is not None else (2, 2, 2)
        coarse = F.affine_grid(theta, [b, 1, *points], align_corners=True)
        if params.field is not None:
            coarse = coarse + (params.field / half_in[None, :, None, None, None]).flip(1).permute(0, 2, 3, 4, 1)
        return upsample_field(coarse.permute(0, 4, 1, 2, 3), params.out_shape).permute(0, 2, 3, 4, 1)

    def apply(self, x: torch.Tensor, params: SpatialParams, spacing: Sequence[float], mode: str = "bilinear", padding: str = "zeros") -> torch.Tensor:
        """Resample [B, C, X, Y, Z] through the grid; ``mode='nearest'`` for label maps.

        Integer label tensors are resampled exactly (nearest) and keep their dtype.
        """
        if x.dim() != 5:
            raise ValueError(f"expected a [B, C, X, Y, Z] tensor, got shape {tuple(x.shape)}")
        grid = self.grid(params, x.shape[2:], spacing)
        if x.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
            if mode != "nearest":
                raise ValueError("integer label maps must be resampled with mode='nearest'")
            if int(x.max()) >= 2**24:
                raise ValueError("label ids >= 2**24 cannot be resampled exactly; compact them first")
            out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode=padding, align_corners=True)
            return out.round().to(x.dtype)
        return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=True)

