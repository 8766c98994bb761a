"""Inference: preprocess, sliding-window prediction, post-processing, geometry back to the input.

The chain, as a function (`segment_volume`) with a thin class around it (`Segmenter`):

1. `preprocess`: reorient to canonical RAS (permutations/flips only, so no interpolation), smooth
   before down-sampling (optional Gaussian anti-aliasing), resample linearly to the model's
   spacing on a grid with the same centre and direction (`resampling.grid_for_spacing`), normalise with
   the training normalisation (`synthesis.intensity.robust_normalize`, the checkpoint's quantiles)
   and pad to at least one patch.
2. `predict_probabilities`: MONAI sliding-window inference with Gaussian blending, softmax, and
   optional left-right flip test-time augmentation (mean of the two probability maps).
3. Back to the input: the class probabilities are interpolated linearly onto the RAS-oriented
   input grid with an exact world-space mapping (`grid_argmax.argmax_on_grid`), arg-maxed, post-processed
   (`postprocess`) and un-permuted (`Reorientation.undo`); the result carries the input's exact
   geometry.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from .errors import InputError
from .grid_argmax import argmax_on_grid
from .io import Reorientation, Volume, from_sitk, reorient, to_sitk
from .model import ModelMeta, load_checkpoint
from .postprocess import postprocess
from .resampling import grid_for_spacing, resample_to
from .synthesis.intensity import robust_normalize

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.pt"
_AMP_CHOICES = ("auto", "bf16", "fp16", "fp32")


@dataclass(frozen=True)
class InferenceConfig:
    """Inference settings (one source of defaults for the CLI, the Slicer module and validation).

    Attributes:
        overlap: sliding-window overlap fraction in [0, 1), one for all axes or three for the
            network's RAS axes (left-right, anterior-posterior, inferior-superior).
        sw_batch_size: windows per network call.
        blend: window blending, 'gaussian' or 'constant'.
        tta_flip: average with the prediction on the left-right flipped image (RAS axis 0);
            doubles the network time.
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.
        amp: 'auto' (bf16 on a CPU with avx512_bf16/amx_bf16, else fp32; bf16 or fp16 on CUDA),
            'bf16', 'fp16' or 'fp32'.
        antialias: Gaussian smoothing before down-sampling to the model spacing (sigma =
            (factor - 1) / 2 input voxels per axis, as scikit-image's ``anti_aliasing``).
        min_component_mm3: connected components (26-connectivity) of a class smaller than this
            volume in mm^3 are set to background; 0 disables.
        max_lateral_mm: body and disc components whose centroid lies further than this from the
            median left-right position of the large vertebral-body components are set to
            background (a heuristic against false positives in lateral slices); None disables.
        off_column: remove body components that do not continue the spinal column (bowel loops,
            bladder wall: `column_outliers`) and disc components left far from the remaining bodies.
    """

    overlap: float | tuple[float, float, float] = 0.5
    sw_batch_size: int = 2
    blend: str = "gaussian"
    tta_flip: bool = False
    device: str = "auto"
    amp: str = "auto"
    antialias: bool = True
    min_component_mm3: float = 500.0
    max_lateral_mm: float | None = 40.0
    off_column: bool = True

    @property
    def overlaps(self) -> tuple[float, float, float]:
        """The overlap per network axis (RAS)."""
        o = self.overlap
        return tuple(float(v) for v in o) if isinstance(o, tuple) else (float(o),) * 3

    def __post_init__(self) -> None:
        if isinstance(self.overlap, (tuple, list)):  # e.g. from a command line: 1 or 3 values
            values = tuple(float(v) for v in self.overlap)
            if len(values) not in (1, 3):
                raise ValueError(f"overlap must be one value or three (RAS axes), got {self.overlap}")
            object.__setattr__(self, "overlap", values[0] if len(values) == 1 else values)
        if not all(0.0 <= float(o) < 1.0 for o in self.overlaps):
            raise ValueError(f"overlap must be in [0, 1), one value or three, got {self.overlap}")
        if int(self.sw_batch_size) != self.sw_batch_size or self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive integer, got {self.sw_batch_size}")
        if self.blend not in ("gaussian", "constant"):
            raise ValueError(f"blend must be 'gaussian' or 'constant', got {self.blend!r}")
        if not all(isinstance(v, bool) for v in (self.tta_flip, self.antialias, self.off_column)):
            raise TypeError("tta_flip, antialias and off_column must be booleans")
        dev = str(self.device)
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.amp not in _AMP_CHOICES:
            raise ValueError(f"amp must be one of {_AMP_CHOICES}, got {self.amp!r}")
        if not np.isfinite(self.min_component_mm3) or self.min_component_mm3 < 0:
            raise ValueError(f"min_component_mm3 must be >= 0, got {self.min_component_mm3}")
        if self.max_lateral_mm is not None and not self.max_lateral_mm > 0:
            raise ValueError(f"max_lateral_mm must be > 0 or None, got {self.max_lateral_mm}")


@dataclass
class PreprocessContext:
    """What `segment_volume` needs to map a prediction back to the input.

    Attributes:
        reorientation: input -> RAS permutation/flips (`undo` restores the input layout).
        ras_grid: geometry of the RAS-oriented input (array: a zero-copy placeholder).
        net_grid: geometry of the model-spacing grid before padding.
        pad: (before, after) voxels of padding per axis of the network tensor.
    """

    reorientation: Reorientation
    ras_grid: Volume
    net_grid: Volume
    pad: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass
class SegmentationResult:
    """Output of `segment_volume`.

    Attributes:
        semantic: uint8 labels (0 background, 1 vertebral body, 2 disc, ...) on the input grid.
        timings: seconds for 'preprocess', 'network', 'postprocess' and 'total'.
        postprocess: what post-processing removed (component counts and volumes in mm^3).
        probabilities: [C, X, Y, Z] float32 class probabilities on ``probability_grid`` (RAS
            orientation, model spacing) when requested, else None.
        probability_grid: geometry of ``probabilities`` (None when not requested).
    """

    semantic: Volume
    timings: dict[str, float]
    postprocess: dict = field(default_factory=dict)
    probabilities: np.ndarray | None = None
    probability_grid: Volume | None = None


# ----------------------------------------------------------------------------- device and precision


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; raises ValueError for unavailable CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} requested but CUDA is not available (use 'cpu' or 'auto')")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (fast bf16 matmuls on the CPU)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device`` (None: full fp32)."""
    if amp == "fp32":
        return None
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


# ----------------------------------------------------------------------------- preprocessing


def _placeholder(vol: Volume) -> Volume:
    """Same geometry, zero-copy uint8 array (only the geometry is kept)."""
    return Volume(np.broadcast_to(np.zeros((), np.uint8), vol.shape), vol.spacing, vol.origin, vol.direction.copy())


def _antialias(vol: Volume, spacing) -> Volume:
    """Gaussian smoothing with sigma = (factor - 1) / 2 voxels on each axis being down-sampled."""
    factor = np.asarray(spacing, float) / np.asarray(vol.spacing)
    sigma_mm = np.maximum(0.0, (factor - 1.0) / 2.0) * np.asarray(vol.spacing)
    if not (sigma_mm > 0).any():
        return vol
    img = sitk.Cast(to_sitk(vol), sitk.sitkFloat32)
    out = sitk.DiscreteGaussian(img, [float(s) ** 2 for s in sigma_mm], 32, 0.01, True)
    return from_sitk(out)


def preprocess(
    vol: Volume, meta: ModelMeta, config: InferenceConfig | None = None
) -> tuple[torch.Tensor, PreprocessContext]:
    """Bring an image onto the network's grid and intensity scale.

    Args:
        vol: the input image, any orientation and spacing.
        meta: the checkpoint metadata (spacing and patch size in RAS axis order, normalisation).
        config: only ``antialias`` is used (default InferenceConfig()).

    Returns:
        A float32 CPU tensor [1, 1, X, Y, Z] (RAS axes, ``meta.spacing``, values in [0, 1],
        padded with 0 to at least ``meta.patch_size``) and the context to map results back.
    """
    config = config or InferenceConfig()
    norm = meta.normalisation
    if norm.get("kind", "robust_quantile") != "robust_quantile":
        raise InputError(f"unsupported normalisation {norm.get('kind')!r} in the model metadata")
    ras, reo = reorient(vol, "RAS")
    grid = grid_for_spacing(ras, meta.spacing)
    src = _antialias(ras, meta.spacing) if config.antialias else ras
    resampled = resample_to(src, grid, "linear", fill=float(np.min(ras.array)))
    x = torch.from_numpy(np.ascontiguousarray(resampled.array, dtype=np.float32))[None, None]
    x = robust_normalize(x, float(norm.get("lower", 0.005)), float(norm.get("upper", 0.995)))
    pad = []
    for size, patch in zip(grid.shape, meta.patch_size):
        total = max(0, int(patch) - size)
        pad.append((total // 2, total - total // 2))
    if any(sum(p) for p in pad):
        x = F.pad(x, [v for p in reversed(pad) for v in p], value=0.0)
    return x.contiguous(), PreprocessContext(reo, _placeholder(ras), _placeholder(grid), tuple(pad))


# ----------------------------------------------------------------------------- network


@torch.inference_mode()
def predict_probabilities(
    net: torch.nn.Module, tensor: torch.Tensor, meta: ModelMeta, config: InferenceConfig | None = None
) -> torch.Tensor:
    """Sliding-window class probabilities [1, C, X, Y, Z] (float32, on the config's device).

    Windows of ``meta.patch_size`` are blended (Gaussian by default) as logits, then a softmax
    over classes; with ``config.tta_flip`` the probabilities of the left-right flipped input
    (RAS axis 0, tensor dim 2) are flipped back and averaged in.
    """
    from monai.inferers import sliding_window_inference

    config = config or InferenceConfig()
    device = resolve_device(config.device)
    amp = resolve_amp(config.amp, device)
    x = tensor.to(device=device, dtype=torch.float32)

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            return net(window).float()

    def run(inp: torch.Tensor) -> torch.Tensor:
        logits = sliding_window_inference(
            inp, tuple(int(p) for p in meta.patch_size), int(config.sw_batch_size), predictor,
            overlap=config.overlaps, mode=config.blend, sw_device=device, device=device,
        )
        return torch.softmax(logits.float(), dim=1)

    probs = run(x)
    if config.tta_flip:
        probs = probs.add_(run(x.flip(2)).flip(2)).mul_(0.5)
    return probs


# ----------------------------------------------------------------------------- the whole chain


def segment_volume(
    vol: Volume, net: torch.nn.Module, meta: ModelMeta, config: InferenceConfig | None = None,
    keep_probabilities: bool = False,
) -> SegmentationResult:
    """Segment one image; the result has the input's exact grid (shape, spacing, origin, direction).

    Args:
        vol: input image (any orientation, spacing, dtype).
        net: the network (moved to the config's device and put in eval mode).
        meta: its checkpoint metadata.
        config: inference settings (default InferenceConfig()).
        keep_probabilities: also return the RAS model-grid probabilities (memory: C x grid).
    """
    config = config or InferenceConfig()
    device = resolve_device(config.device)
    t0 = time.perf_counter()
    tensor, ctx = preprocess(vol, meta, config)
    t1 = time.perf_counter()
    net = net.to(device).eval()
    probs = predict_probabilities(net, tensor, meta, config)[0]
    (bx, _), (by, _), (bz, _) = ctx.pad
    nx, ny, nz = ctx.net_grid.shape
    probs = probs[:, bx : bx + nx, by : by + ny, bz : bz + nz]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t2 = time.perf_counter()
    labels = argmax_on_grid(probs, ctx.net_grid, ctx.ras_grid)
    labels, report = postprocess(labels, ctx.ras_grid, config)
    ras_labels = Volume(labels, ctx.ras_grid.spacing, ctx.ras_grid.origin, ctx.ras_grid.direction)
    back = ctx.reorientation.undo(ras_labels)
    diffs = back.geometry_mismatch(vol, tol=1e-4)
    if diffs:  # a bug, not bad input
        raise RuntimeError("segmentation grid differs from the input: " + "; ".join(diffs))
    semantic = vol.with_array(np.ascontiguousarray(back.array, dtype=np.uint8))
    t3 = time.perf_counter()
    timings = {"total": t3 - t0, "preprocess": t1 - t0, "network": t2 - t1, "postprocess": t3 - t2}
    log.info("segmented %s in %.1f s (preprocess %.1f, network %.1f, postprocess %.1f)", vol.shape, *timings.values())
    result = SegmentationResult(semantic, timings, report)
    if keep_probabilities:
        result.probabilities = probs.float().cpu().numpy()
        result.probability_grid = ctx.net_grid
    return result


def default_model_path() -> Path:
    """The shipped model; raises InputError when the package holds none yet."""
    if not DEFAULT_MODEL.is_file():
        problem = "no shipped default model in this installation yet; pass a checkpoint (--model)"
        raise InputError(problem, str(DEFAULT_MODEL))
    return DEFAULT_MODEL


class Segmenter:
    """A loaded network with its metadata and settings: ``Segmenter.from_checkpoint(p)(volume)``."""

    def __init__(self, net: torch.nn.Module, meta: ModelMeta, config: InferenceConfig | None = None) -> None:
        self.config = config or InferenceConfig()
        self.device = resolve_device(self.config.device)
        self.net = net.to(self.device).eval()
        self.meta = meta

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, config: InferenceConfig | None = None) -> Segmenter:
        """Load ``path`` (default: the shipped model) after checking its SHA-256."""
        net, meta = load_checkpoint(path if path is not None else default_model_path())
        return cls(net, meta, config)

    def __call__(self, vol: Volume, keep_probabilities: bool = False) -> SegmentationResult:
        return segment_volume(vol, self.net, self.meta, self.config, keep_probabilities)
