"""Demo, second half: segment a T1-like and a T2-like phantom image with the shipped model.

The phantom's own targets are the truth: per-level Dice of the instance map (levels assigned by
`instances.assign_levels`) and a PNG overlay (image | semantic | instances) per contrast.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .inference import Segmenter
from .instances import assign_levels
from .io import Volume, write_bytes_atomic, write_volume
from .labels import LabelTable, semantic_map, vertebra_name
from .metrics import dice
from .preview import _to_uint8, mid_sagittal, overlay
from .synthesis.intensity import GaussianMixture
from .synthesis.physics_contrast import PhysicsContrast, nominal_physics_params
from .synthesis.pipeline import LabelBatch
from .synthesis.resolution import RandomResolution, ResolutionParams
from .synthesis.sampling import make_generator

# Sequence and timings (ms, degrees) of common sagittal lumbar protocols at 1.5 T.
CONTRASTS = {
    "T1w": ("spin_echo", {"tr": 500.0, "te": 12.0}),
    "T2w": ("spin_echo", {"tr": 4000.0, "te": 100.0}),
    "STIR": ("inversion_recovery", {"tr": 4000.0, "te": 60.0, "ti": 160.0}),  # TI near fat's null at 1.5 T
    "T1w_GRE": ("spoiled_gre", {"tr": 12.0, "te": 4.6, "flip_deg": 20.0}),
    "Dixon_water": ("water_fat", {"dixon_output": "water"}),
}
DEMO_CONTRASTS = ("T1w", "T2w")


def contrast_image(vol: Volume, table: LabelTable, kind: str, seed: int = 0, slice_mm: float = 4.0) -> Volume:
    """A fixed-contrast phantom image (``kind`` in `CONTRASTS`): mid-range tissue values, 4 mm sagittal slices."""
    if kind not in CONTRASTS:
        raise ValueError(f"contrast must be one of {sorted(CONTRASTS)}, got {kind!r}")
    sequence, timings = CONTRASTS[kind]
    batch = LabelBatch.from_array(vol.array, table, vol.spacing)
    params = nominal_physics_params(batch.tissues, sequence, 1.5, **timings)
    means, _ = PhysicsContrast().apply(params)
    gen = make_generator(seed)
    image = GaussianMixture.apply(batch.labels, means, means * 0.05, gen)
    # thick slices across the left-right axis (array axis 2 of the IPR phantom)
    spacing = list(vol.spacing)
    target = torch.tensor([[spacing[0], spacing[1], max(slice_mm, spacing[2])]])
    image = RandomResolution().apply(image, ResolutionParams(target), spacing)
    image = image + 0.02 * torch.randn(image.shape, generator=gen)
    return vol.with_array((image[0, 0].clamp(min=0) * 1000).numpy().astype(np.float32))


def per_level_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {vertebra_name(int(i)): round(dice(pred == i, truth == i), 3) for i in np.unique(truth) if i}


def _panel(image: Volume, semantic: Volume, instances: Volume) -> np.ndarray:
    gray = mid_sagittal(image)
    tiles = [np.repeat(_to_uint8(gray)[..., None], 3, 2), overlay(gray, mid_sagittal(semantic).astype(np.int64)),
             overlay(gray, mid_sagittal(instances).astype(np.int64) % 97)]
    return np.concatenate(tiles, axis=1)


def segment_phantom_demo(vol: Volume, table: LabelTable, out_dir, segmenter: Segmenter | None = None) -> dict:
    """Segment T1w and T2w phantom images; write overlays and return per-level Dice."""
    segmenter = segmenter or Segmenter.from_checkpoint()
    truth = table.target_map(vol.array)
    truth_sem = semantic_map(truth)
    summary = {}
    panels = []
    for kind in DEMO_CONTRASTS:
        image = contrast_image(vol, table, kind)
        write_volume(image, out_dir / f"phantom_{kind}.nii.gz")
        result = segmenter(image)
        instances, report = assign_levels(result.semantic)
        write_volume(result.semantic, out_dir / f"phantom_{kind}_semantic.nii.gz")
        write_volume(instances, out_dir / f"phantom_{kind}_instances.nii.gz")
        summary[kind] = {
            "dice_vertebral_body": round(dice(result.semantic.array == 1, truth_sem == 1), 3),
            "dice_disc": round(dice(result.semantic.array == 2, truth_sem == 2), 3),
            "per_level_dice": per_level_dice(instances.array, truth),
            "levels_anchor": report.get("anchor"),
            "levels_confidence": report.get("confidence"),
            "warnings": report.get("warnings", []),
            "seconds": round(result.timings["total"], 2),
        }
        panels.append(_panel(image, result.semantic, instances))
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(np.concatenate(panels, axis=0)).save(buf, format="PNG")
    summary["overlay"] = str(write_bytes_atomic(buf.getvalue(), out_dir / "segmentation_overlay.png"))
    return summary



