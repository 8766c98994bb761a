"""Outputs of the spine measurements: measurements.csv / .json / .png, and the `measure` runner.

`run_measure` reads a segmentation (any convention the converters know), measures it with
`measure.measure_volume` and writes, atomically, into the output folder:

* ``measurements.csv``: one row per level ('L3', then its disc 'L3-L4' when segmented), the
  columns of `COLUMNS`, empty where a value is not measurable, ``status`` / ``reason`` saying why;
* ``measurements.json``: the same values plus, for every measurement, its two end points in RAS
  millimetres (``points_ras``) and the anatomical frame of each level (origin and unit axes, RAS);
* ``measurements.png``: a mid-sagittal reformat through the bodies' centres (the image if given,
  else the labels), superior up and anterior left, every line drawn and labelled with its value.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .body_geometry import INWARD_SHIFT
from .errors import InputError
from .io import Volume, read_image, read_labels, write_bytes_atomic
from .label_converters import check_convention, convert_instances
from .measure import GENANT_BANDS, MEYERDING_BANDS, Level, measure_volume
from .preview import _PALETTE, _to_uint8

log = logging.getLogger(__name__)

COLUMNS = (
    "level", "anterior_height_mm", "middle_height_mm", "posterior_height_mm", "wedge_ratio", "biconcavity_ratio",
    "genant_grade", "anterior_distance_to_next_mm", "posterior_distance_to_next_mm", "disc_anterior_height_mm",
    "disc_middle_height_mm", "disc_posterior_height_mm", "slip_percent", "meyerding_grade",
    "height_loss_percent", "adjacent_height_loss_percent", "depth_mm", "slip_mm", "status", "reason",
)
_LPS_TO_RAS = np.array([-1.0, -1.0, 1.0])
_COLOURS = {"height": (255, 220, 0), "disc": (0, 230, 120), "distance": (0, 200, 255), "slip": (255, 80, 200)}


def _ras(p: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.asarray(p) * _LPS_TO_RAS]


def _clean(v):
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else round(float(v), 3)
    return v


def rows(levels: list[Level]) -> list[dict]:
    """CSV rows (dicts keyed by `COLUMNS`; None where not measurable)."""
    out = []
    for lev in levels:
        row = {c: _clean(lev.values.get(c)) for c in COLUMNS}
        row.update(level=lev.name, status=lev.status, reason=lev.reason)
        out.append(row)
    return out


def to_csv(levels: list[Level]) -> str:
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows(levels):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def to_json(levels: list[Level], meta: dict) -> dict:
    """The JSON document: values, end points (RAS mm) of each measurement and the frames."""
    items = []
    for lev, row in zip(levels, rows(levels)):
        item = {"level": lev.name, "label": lev.label, "kind": lev.kind, "status": lev.status, "reason": lev.reason,
                "values": {k: v for k, v in row.items() if k not in ("level", "status", "reason")}, "measurements": {}}
        for name, (p, q) in lev.lines.items():
            item["measurements"][name] = {"value": _clean(lev.values.get(name)), "points_ras": [_ras(p), _ras(q)]}
        if lev.section is not None:
            f = lev.section.frame
            item["frame"] = {"origin_ras": _ras(f.origin), "superior_ras": _ras(f.superior),
                             "anterior_ras": _ras(f.anterior), "left_ras": _ras(f.left)}
        items.append(item)
    method = {
        "coordinates": "RAS millimetres (world coordinates of the segmentation's header)",
        "heights": f"along the body's cranio-caudal axis (bisector of the endplate normals), lines shifted "
                   f"{INWARD_SHIFT:.0%} of the depth inward from the anterior/posterior sides of the mid-sagittal "
                   "section's bounding rectangle; farthest segmented points at sub-voxel precision",
        "distances": "anterior/posterior: from the upper body's lower anchor to the lower body's upper anchor",
        "genant_bands_percent": list(GENANT_BANDS), "meyerding_bands_percent": list(MEYERDING_BANDS),
        "slip": "posterior-inferior corner of the body over the posterior-superior corner of the one below, "
                "along the lower body's superior endplate, % of the lower body's depth; + anterolisthesis",
    }
    return {"format": "spinesynthseg-measurements/1", **meta, "method": method, "levels": items}


# ----------------------------------------------------------------------------- PNG


def _reformat(levels: list[Level], seg: Volume, image: Volume | None, pixel: float):
    """Mid-sagittal reformat (rows superior->inferior, columns anterior->posterior) and its mapping."""
    centres = np.array([lev.section.frame.origin for lev in levels if lev.section is not None])
    pts = np.array([p for lev in levels for pair in lev.lines.values() for p in pair] + list(centres))
    s_lo, s_hi = pts[:, 2].min() - 25.0, pts[:, 2].max() + 25.0  # LPS z: superior
    a_lo, a_hi = (-pts[:, 1]).min() - 25.0, (-pts[:, 1]).max() + 25.0  # anterior = -y
    ss = np.arange(s_hi, s_lo, -pixel)  # rows: superior -> inferior
    aa = np.arange(a_hi, a_lo, -pixel)  # columns: anterior -> posterior
    order = np.argsort(centres[:, 2])
    lr = np.interp(ss, centres[order, 2], centres[order, 0])  # follow the bodies' left-right position
    world = np.stack(np.broadcast_arrays(lr[:, None], -aa[None, :], ss[:, None]), -1)

    def sample(vol: Volume, order_: int) -> np.ndarray:
        idx = vol.world_to_index(world.reshape(-1, 3))
        data = vol.array if order_ == 0 else vol.array.astype(np.float32)
        return ndimage.map_coordinates(data, idx.T, order=order_, cval=0).reshape(world.shape[:2])

    labels = sample(seg, 0)
    gray = sample(image, 1) if image is not None else None

    def to_px(p: np.ndarray) -> tuple[float, float]:
        return ((a_hi + p[1]) / pixel, (s_hi - p[2]) / pixel)  # (column, row)

    return labels, gray, to_px


def render_png(levels: list[Level], seg: Volume, image: Volume | None = None, pixel: float = 0.25) -> bytes:
    """PNG bytes of the mid-sagittal reformat with every measurement line and its value."""
    drawn = [lev for lev in levels if lev.section is not None]
    if not drawn:
        canvas = Image.new("RGB", (480, 120))
        ImageDraw.Draw(canvas).text((10, 50), "no measurable level", fill=(255, 255, 255))
        buf = _io.BytesIO()
        canvas.save(buf, format="PNG")
        return buf.getvalue()
    labels, gray, to_px = _reformat(drawn, seg, image, pixel)
    if gray is not None:
        rgb = np.repeat(_to_uint8(gray)[..., None], 3, 2)
    else:
        rgb = np.zeros((*labels.shape, 3), np.uint8)
        mask = labels > 0
        rgb[mask] = (_PALETTE[labels[mask] % len(_PALETTE)] * 0.6).astype(np.uint8)
    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=max(12, int(3.0 / pixel)))
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for lev in drawn:
        c, r = to_px(lev.section.frame.origin)
        if lev.kind == "vertebra":
            draw.text((max(c - 30 / pixel, 2), r), lev.name, fill=(255, 255, 255), font=font, anchor="lm")
        for name, (p, q) in lev.lines.items():
            kind = ("slip" if name.startswith("slip") else "distance" if "distance" in name
                    else "disc" if name.startswith("disc") else "height")
            (c0, r0), (c1, r1) = to_px(p), to_px(q)
            draw.line([(c0, r0), (c1, r1)], fill=_COLOURS[kind], width=max(2, int(0.4 / pixel)))
            value = lev.values.get(name)
            if value is None:
                continue
            text = f"{value:.0f}%" if kind == "slip" else f"{value:.1f}"
            cx, cy = (c0 + c1) / 2, (r0 + r1) / 2
            if kind == "distance":
                cx += (-1 if name.startswith("anterior") else 1) * 9 / pixel
            elif kind == "slip":
                cx += 14 / pixel
            draw.text((cx, cy), text, fill=_COLOURS[kind], font=font, anchor="mm", stroke_width=2,
                      stroke_fill=(0, 0, 0))
    buf = _io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- runner


def _check_image_covers(image: Volume, levels: list[Level], name: str) -> None:
    """The PNG's image may have any grid, but it must hold the measured bodies (world coordinates)."""
    centres = [lev.section.frame.origin for lev in levels if lev.section is not None]
    if not centres:
        return
    idx = image.world_to_index(np.asarray(centres))
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(image.shape) - 0.5), axis=1)
    if not inside.all():
        raise InputError(f"{int((~inside).sum())} of {len(centres)} measured bodies lie outside this image "
                         "(not the segmentation's image?)", name)


def run_measure(seg_path, out_dir, image_path=None, convention: str = "spineps") -> dict:
    """Measure a segmentation file and write measurements.csv / .json / .png into ``out_dir``.

    Args:
        seg_path: instance segmentation (NIfTI, NRRD, MHA, DICOM folder) in ``convention``.
        out_dir: output folder (created).
        image_path: optional image for the PNG (any grid: it is sampled in world coordinates).
        convention: one of `label_converters.INSTANCE_CONVENTIONS` ('-' or '_' alike).

    Returns:
        A summary: output paths, level counts, run time in seconds.

    Raises:
        InputError: unreadable or 2D input, unknown convention or labels, no vertebrae, an image
            that does not hold the measured bodies (names the file).
    """
    source = str(seg_path)
    check_convention(convention, source=source)
    t0 = time.perf_counter()
    seg = read_labels(seg_path)
    seg = seg.with_array(convert_instances(seg.array, convention, source))
    image = read_image(image_path) if image_path else None
    levels = measure_volume(seg, source)
    if image is not None:
        _check_image_covers(image, levels, str(image_path))
    elapsed = time.perf_counter() - t0
    out = Path(out_dir)
    meta = {"segmentation": source, "image": str(image_path) if image_path else None, "convention": convention,
            "spacing_mm": list(seg.spacing)}
    paths = {
        "csv": write_bytes_atomic(to_csv(levels).encode(), out / "measurements.csv"),
        "json": write_bytes_atomic(json.dumps(to_json(levels, meta), indent=1).encode(), out / "measurements.json"),
        "png": write_bytes_atomic(render_png(levels, seg, image), out / "measurements.png"),
    }
    measured = sum(lev.status != "not measurable" for lev in levels)
    log.info("%d of %d levels measured in %.2f s", measured, len(levels), elapsed)
    return {"levels": len(levels), "measured": measured, "seconds": round(elapsed, 3),
            "unmeasurable": {lev.name: lev.reason for lev in levels if lev.status == "not measurable"},
            **{k: str(v) for k, v in paths.items()}}
