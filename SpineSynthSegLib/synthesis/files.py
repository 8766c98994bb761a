"""Synthesis from and to files: a label map on disk -> N synthetic image/label pairs + preview.

The label map is reoriented to canonical RAS for synthesis (so that the sagittal axis and the
flip/slice-thickness defaults mean the same thing for every input) and the results are put back
on the input's exact grid (same array order, spacing, origin and direction).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..io import Volume, read_labels, reorient, write_volume
from ..labels import LabelEntry, LabelTable, is_disc, is_vertebra, sidecar_path
from ..preview import save_grid
from .pipeline import LabelBatch, SynthesisConfig, SynthesisPipeline
from .sampling import make_generator

log = logging.getLogger(__name__)


@dataclass
class SynthResult:
    images: list[Path]
    labels: list[Path]
    preview: Path | None
    volumes: list[tuple[Volume, Volume]]  # the (image, labels) pairs as written


def load_labelmap(path: str | Path, table_path: str | Path | None = None) -> tuple[Volume, LabelTable]:
    """Read a generation label map and its table (sidecar JSON beside it, or a default table).

    Without a sidecar every label that is a valid output id (vertebra 1-28, disc 101-127) is its
    own target and every other label only drives image generation (tissue 'unknown').
    """
    vol = read_labels(path)
    side = Path(table_path) if table_path else sidecar_path(path)
    if side.exists():
        table = LabelTable.load(side)
        table.check(vol.array, str(path))
        return vol, table
    if table_path:
        raise InputError("label table not found", str(table_path))
    log.info("%s has no sidecar %s: vertebra/disc ids become targets, other labels generation-only", path, side.name)
    entries = []
    for lab in np.unique(vol.array).tolist():
        target = lab if (is_vertebra(lab) or is_disc(lab)) else 0
        entries.append(LabelEntry(int(lab), "background" if lab == 0 else f"label {lab}", "air" if lab == 0 else "unknown", target))
    return vol, LabelTable(tuple(entries))


def _crop_volume(template: Volume, shape: tuple[int, int, int], array: np.ndarray) -> Volume:
    """A crop-sized output grid centred on the template's centre, same spacing and direction."""
    centre_in = template.direction @ ((np.asarray(template.shape) - 1) / 2 * np.asarray(template.spacing))
    centre_out = template.direction @ ((np.asarray(shape) - 1) / 2 * np.asarray(template.spacing))
    origin = np.asarray(template.origin) + centre_in - centre_out
    return Volume(array, template.spacing, tuple(origin), template.direction)


def synthesize_files(
    label_path: str | Path,
    out_dir: str | Path,
    n: int = 4,
    config: SynthesisConfig | None = None,
    seed: int = 0,
    crop: tuple[int, int, int] | None = None,
    device: str = "cpu",
    batch_size: int = 4,
    preview: str | Path | None = None,
    table_path: str | Path | None = None,
    suffix: str = ".nii.gz",
) -> SynthResult:
    """Write ``n`` synthetic image/label pairs made from one label map.

    Outputs ``synth_0000_image.nii.gz`` / ``synth_0000_labels.nii.gz`` (target labels in the
    output convention) on the input grid, or on a ``crop``-sized grid (RAS axis order) centred
    on the input. Inputs are validated before anything is written.
    """
    if n < 1:
        raise InputError(f"--n must be >= 1, got {n}")
    if crop is not None and (len(crop) != 3 or min(crop) < 1):
        raise InputError(f"crop must be three positive sizes, got {crop}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    config = config or SynthesisConfig()
    vol, table = load_labelmap(label_path, table_path)
    if not vol.array.any():  # one flat intensity and an empty target: never a training pair
        raise InputError("the label map is empty (every voxel 0)", str(label_path))
    ras, reo = reorient(vol, "RAS")
    pipeline = SynthesisPipeline(config)
    source = LabelBatch.from_array(ras.array, table, ras.spacing).to(device)
    gen = make_generator(seed, device)
    out_dir = Path(out_dir)
    images, labels, shown = [], [], []
    done = 0
    while done < n:
        b = min(batch_size, n - done)
        batch = LabelBatch.stack([source] * b)
        with torch.no_grad():
            syn = pipeline(batch, gen, out_shape=crop)
        for i in range(b):
            img_arr = syn.image[i, 0].cpu().numpy()
            lab_arr = syn.target[i, 0].cpu().numpy().astype(np.int32)
            if crop is None:
                img_vol, lab_vol = reo.undo(ras.with_array(img_arr)), reo.undo(ras.with_array(lab_arr))
            else:
                img_vol, lab_vol = _crop_volume(ras, crop, img_arr), _crop_volume(ras, crop, lab_arr)
            k = done + i
            images.append(write_volume(img_vol, out_dir / f"synth_{k:04d}_image{suffix}"))
            labels.append(write_volume(lab_vol, out_dir / f"synth_{k:04d}_labels{suffix}"))
            shown.append((img_vol, lab_vol))
        done += b
    grid = None
    if preview:
        grid = save_grid([s[0] for s in shown[:16]], preview, columns=4)
    return SynthResult(images, labels, grid, shown)
