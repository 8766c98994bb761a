"""PNG previews: grids of mid-sagittal slices, anatomically oriented (superior up, anterior left)."""

from __future__ import annotations

import io as _io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .io import Volume, reorient, write_bytes_atomic

# A fixed colour table for label overlays (id -> RGB), cycled.
_PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200]],
    dtype=np.uint8,
)


def mid_sagittal(vol: Volume) -> np.ndarray:
    """The mid-sagittal slice as a 2D array, rows superior -> inferior, columns anterior -> posterior."""
    ras, _ = reorient(vol, "RAS")
    sl = ras.array[ras.shape[0] // 2]  # [A/P, S/I] with A and S increasing
    return sl[::-1, ::-1].T  # rows: S at top; cols: A at left


def _to_uint8(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [0.5, 99.5]) if img.size else (0, 1)
    return (np.clip((img - lo) / max(hi - lo, 1e-8), 0, 1) * 255).astype(np.uint8)


def overlay(gray: np.ndarray, labels: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """RGB image of ``gray`` with coloured, semi-transparent ``labels`` (0 = none)."""
    rgb = np.repeat(_to_uint8(gray)[..., None], 3, axis=2).astype(np.float32)
    mask = labels > 0
    colours = _PALETTE[labels[mask] % len(_PALETTE)].astype(np.float32)
    rgb[mask] = (1 - alpha) * rgb[mask] + alpha * colours
    return rgb.astype(np.uint8)


def _fit(tile: np.ndarray, spacing_rc: tuple[float, float], height: int) -> np.ndarray:
    """Resize a tile to ``height`` rows with the physical aspect ratio kept."""
    rows, cols = tile.shape[:2]
    width = max(1, round(height * (cols * spacing_rc[1]) / max(rows * spacing_rc[0], 1e-8)))
    return np.asarray(Image.fromarray(tile).resize((width, height), Image.BILINEAR))


def _slice_spacing(vol: Volume) -> tuple[float, float]:
    ras, _ = reorient(vol, "RAS")
    return ras.spacing[2], ras.spacing[1]


def save_grid(images: Sequence[Volume], path: str | Path, labels: Sequence[Volume] | None = None, columns: int = 4, height: int = 256) -> Path:
    """Write a PNG grid of the mid-sagittal slices of ``images`` (with label overlays if given)."""
    if not images:
        raise ValueError("no images to preview")
    tiles = []
    for n, vol in enumerate(images):
        gray = mid_sagittal(vol)
        tile = overlay(gray, mid_sagittal(labels[n]).astype(np.int64)) if labels is not None else np.repeat(_to_uint8(gray)[..., None], 3, 2)
        tiles.append(_fit(tile, _slice_spacing(vol), height))
    width = max(t.shape[1] for t in tiles)
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    canvas = np.zeros((rows * height, columns * width, 3), np.uint8)
    for n, t in enumerate(tiles):
        r, c = divmod(n, columns)
        canvas[r * height : r * height + t.shape[0], c * width : c * width + t.shape[1]] = t
    buf = _io.BytesIO()
    Image.fromarray(canvas).save(buf, format="PNG")
    return write_bytes_atomic(buf.getvalue(), path)
