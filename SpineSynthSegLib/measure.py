"""Vertebral body and disc measurements from an instance segmentation (heights, distances, grades).

Each body is measured in its own anatomical frame, never along the image axes (the frame, the
endplate planes and the reduction of whole-vertebra masks to the body: `body_geometry`).

In the mid-sagittal plane (after Schneider et al. 2023, seed 004: bounding trapezoid, lines 10 %
inward) the depth is the robust bounding rectangle of the section (80th percentile of the wall
positions sampled at 15-85 % of the centre height). The anterior / posterior height lines run
parallel to ``u``, ``body_geometry.INWARD_SHIFT`` x depth inside the innermost of the walls measured near both
endplates (10-30 % of the height from each; a leaning wall never leaves a line outside the body),
the middle line halfway. A height is the distance between the outermost 0.5 crossings of the
linearly interpolated mask along its line (the farthest segmented points, sub-voxel), averaged
over a bundle of 117 parallel lines (+-2 voxels, at most 7 % of the depth, antero-posteriorly;
+-3 voxels laterally).

Pairs of adjacent bodies: anterior / posterior distances join the upper body's lower anchor to the
lower body's upper anchor (the height lines' ends). Slip: offset of the upper body's
posterior-inferior corner over the lower body's posterior-superior corner (the posterior walls 15 %
of the height from those endplates), along the lower body's superior endplate, in % of the lower
body's depth (positive: anterolisthesis); Meyerding grade of its magnitude (0 below 10 %).
Discs (100 + vertebra above) are measured like bodies in a frame bisecting the adjacent endplates.
S1 only gets its superior endplate (frame from that endplate alone), for the L5-S1 pair.

Indices (`height_indices`): wedge Ha/Hp, biconcavity Hm/Hp, loss against the adjacent levels
1 - Hp / mean(neighbours' Hp); Genant grade of the largest loss (0 < 20 %, 1 < 25 %, 2 < 40 %, 3).
Coordinates are world LPS mm (the `Volume` convention); `measure_report` writes RAS.
Validation figures: Training/MEASUREMENTS.md.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .body_geometry import (
    ANTERIOR,
    SUPERIOR,
    Sampler,
    Section,
    Shape,
    isolate_body,
    measure_body,
    measure_sacrum_top,
    ortho,
    sacrum_top,
    unit,
)
from .errors import InputError
from .io import Volume
from .labels import CRANIOCAUDAL_ORDER, DISC_OFFSET, VERTEBRA_NAMES, is_disc, is_vertebra, next_vertebra, vertebra_name

log = logging.getLogger(__name__)

GENANT_BANDS = (20.0, 25.0, 40.0)  #: % height loss where Genant grades 1, 2, 3 begin
MEYERDING_BANDS = (10.0, 25.0, 50.0, 75.0, 100.0)  #: % slip where grades I-IV begin; V above 100
MIN_VOLUME_MM3 = 400.0  #: smaller structures are reported as too small
SEPARATE_PIECES_FRACTION = 0.5  #: a second piece this large (vs the largest) makes a label unusable
SACRUM = 26
_POSITIONS = ("anterior", "middle", "posterior")


class _InPieces(str):
    """The reason a label is unusable when it covers two or more structures of similar size."""


def genant_grade(loss_percent: float | None) -> int | None:
    """Genant semi-quantitative grade (0-3) of a height loss in %."""
    if loss_percent is None or not math.isfinite(loss_percent):
        return None
    return sum(loss_percent >= b for b in GENANT_BANDS)


def meyerding_grade(slip_percent: float | None) -> int | None:
    """Meyerding grade (0-5) of the magnitude of a slip in % of the lower body's depth."""
    if slip_percent is None or not math.isfinite(slip_percent):
        return None
    s = abs(slip_percent)
    return sum(s >= b for b in MEYERDING_BANDS[:4]) + int(s > MEYERDING_BANDS[4])


def height_indices(ha: float | None, hm: float | None, hp: float | None,
                   neighbour_hp: list[float | None] | tuple = ()) -> dict[str, float | int | None]:
    """Ratios, losses and Genant grade of one body from its heights (mm).

    Returns:
        ``wedge_ratio`` Ha/Hp, ``biconcavity_ratio`` Hm/Hp, ``adjacent_height_loss_percent``
        100 (1 - Hp / mean(neighbour_hp)), ``height_loss_percent`` (largest of the wedge,
        biconcave and adjacent losses, at least 0) and ``genant_grade``; None where not defined.
    """
    keys = ("wedge_ratio", "biconcavity_ratio", "adjacent_height_loss_percent", "height_loss_percent", "genant_grade")
    out: dict[str, float | int | None] = dict.fromkeys(keys)
    if not hp:
        return out
    out["wedge_ratio"] = ha / hp if ha else None
    out["biconcavity_ratio"] = hm / hp if hm else None
    ref = [h for h in neighbour_hp if h]
    out["adjacent_height_loss_percent"] = 100.0 * (1.0 - hp / float(np.mean(ref))) if ref else None
    losses = [100.0 * (1.0 - r) for r in (out["wedge_ratio"], out["biconcavity_ratio"]) if r is not None]
    losses += [out["adjacent_height_loss_percent"]] if ref else []
    out["height_loss_percent"] = max([0.0, *losses])
    out["genant_grade"] = genant_grade(out["height_loss_percent"])
    return out


# ----------------------------------------------------------------------------- the whole spine


@dataclass
class Level:
    """The measurements of one vertebra (``name`` 'L3') or disc ('L3-L4').

    Attributes:
        label: output id; kind: 'vertebra' or 'disc'.
        status: 'measured', 'partial' or 'not measurable'; ``reason`` says why (or notes).
        values: CSV column -> number (mm, %, ratio or grade), None where not measurable.
        lines: measurement name -> its two end points (world LPS mm).
        section: the geometry it was measured from (None when not measurable).
    """

    label: int
    name: str
    kind: str
    status: str = "measured"
    reason: str = ""
    values: dict[str, float | int | None] = field(default_factory=dict)
    lines: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    section: Section | None = None

    def note(self, text: str) -> None:
        self.reason = "; ".join(filter(None, [self.reason, text]))


def _face_names(vol: Volume) -> tuple[str, ...]:
    """Anatomical names of the six image faces (axis 0 start, axis 0 end, axis 1 start, ...)."""
    names = []
    for ax in range(3):
        for sign in (-1, 1):
            d = sign * vol.direction[:, ax]
            k = int(np.argmax(np.abs(d)))
            names.append((("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))[k][int(d[k] > 0)])
    return tuple(names)


def _shapes(vol: Volume, source: str) -> dict[int, Shape | str]:
    """Every vertebra / disc label present: its largest component (holes filled), or why unusable."""
    arr, spacing = vol.array, np.asarray(vol.spacing)
    if arr.ndim != 3 or min(arr.shape) < 2:
        raise InputError(f"a 3D segmentation is needed, got shape {arr.shape} (2D input)", source)
    voxel = float(np.prod(spacing) ** (1 / 3))
    margin = np.ceil(3.0 + 4.0 * voxel / spacing).astype(int)
    faces = _face_names(vol)
    out: dict[int, Shape | str] = {}
    for label, sl in enumerate(ndimage.find_objects(np.where(arr < 2 * DISC_OFFSET, arr, 0).astype(np.int32)), 1):
        if sl is None or not (is_vertebra(label) or is_disc(label)):
            continue
        start = np.array([max(s.start - m, 0) for s, m in zip(sl, margin)])
        stop = np.array([min(s.stop + m, n) for s, m, n in zip(sl, margin, arr.shape)])
        mask = arr[tuple(slice(a, b) for a, b in zip(start, stop))] == label
        comp, n = ndimage.label(mask, np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
            second = float(np.sort(sizes)[-2] * np.prod(spacing))
            if second >= MIN_VOLUME_MM3 and second >= SEPARATE_PIECES_FRACTION * sizes.max() * np.prod(spacing):
                # two structures under one label: which one is this level cannot be told
                out[label] = _InPieces(f"{n} separate pieces of similar size ({sizes.max() * np.prod(spacing):.0f} and {second:.0f} mm3)")
                continue
            mask = comp == np.argmax(sizes) + 1
            log.info("%s: kept the largest of %d pieces (%.0f %%)", vertebra_name(label), n,
                     100 * sizes.max() / sizes.sum())
        mask = ndimage.binary_fill_holes(mask)
        volume = float(mask.sum() * np.prod(spacing))
        if volume < MIN_VOLUME_MM3:
            out[label] = f"too small ({volume:.0f} mm3 < {MIN_VOLUME_MM3:.0f} mm3)"
            continue
        idx = np.argwhere(mask) + start
        border = sum(((idx[:, ax] == (0, size - 1)[end]) << (2 * ax + end)) for ax, size in enumerate(arr.shape)
                     for end in (0, 1))
        out[label] = Shape(label, idx @ (vol.direction * spacing).T + np.asarray(vol.origin),
                            Sampler.from_mask(vol, mask, start), float(spacing.min()) / 4, voxel, border, faces)
    return out


def _smallest_axis(points: np.ndarray) -> np.ndarray:
    """Smallest principal axis of a point cloud, oriented superior."""
    u = np.linalg.eigh(np.cov((points - points.mean(0)).T))[1][:, 0]
    return u if u @ SUPERIOR >= 0 else -u


def measure_volume(vol: Volume, source: str = "segmentation") -> list[Level]:
    """Measure every vertebra and disc of an instance label map in the output convention.

    Args:
        vol: label map: vertebrae 1-28, discs 100 + vertebra above (other labels are ignored).
        source: the input's name for error messages (the file).

    Returns:
        Levels in cranio-caudal order, each vertebra ('L3') followed by its disc ('L3-L4') when
        segmented; unmeasurable levels are kept with their reason.

    Raises:
        InputError: 2D input, or no vertebra in the segmentation.
    """
    shapes = _shapes(vol, source)
    if set(shapes) <= {1, 2} and isinstance(shapes.get(1), _InPieces):
        raise InputError("labels 1 and 2 only, with several vertebral bodies under label 1: this looks like a "
                         "semantic map (1 body, 2 disc, e.g. <case>_semantic from segment); measure needs an "
                         "instance map with one label per level (<case>_instances)", source)
    verts = [v for v in CRANIOCAUDAL_ORDER if v in shapes and is_vertebra(v)]
    if not verts:
        raise InputError("no vertebrae in the segmentation (labels 1-28 in the output convention)", source)
    centres = {k: s.points.mean(0) for k, s in shapes.items() if isinstance(s, Shape)}
    t13, l6 = 28 in verts, 25 in verts
    levels, sections = [Level(v, vertebra_name(v), "vertebra") for v in verts], {}
    u0s, bodies = {}, {}
    for i, v in enumerate(verts):
        if isinstance(shapes[v], Shape):
            near = [centres[w] for w in verts[max(i - 1, 0):i + 2] if w in centres]
            u0s[v] = unit(near[0] - near[-1]) if len(near) > 1 else _smallest_axis(shapes[v].points)
    flipped = False
    for _ in range(2):  # the arches vote on the header's anterior direction
        anterior = -ANTERIOR if flipped else ANTERIOR
        isolated = {v: isolate_body(shapes[v], u0s[v], anterior) for v in u0s if v != SACRUM}
        bodies = {v: body for v, (body, _) in isolated.items()}
        if flipped or sum(side for _, side in isolated.values()) >= 0:
            break
        flipped = True
        log.warning("%s: the posterior elements lie on the header's anterior side: anterior direction flipped", source)
    for i, (v, lev) in enumerate(zip(verts, levels)):
        if isinstance(shapes[v], str):
            lev.status, lev.reason = "not measurable", shapes[v]
            continue
        if flipped:
            lev.note("anterior direction flipped (posterior elements on the header's anterior side)")
        above = sections.get(verts[i - 1]) if i else None
        u0, hint, shape = u0s[v], anterior, bodies.get(v, shapes[v])
        if v == SACRUM:  # only its superior endplate matters (the FOV often cuts the sacrum below)
            u0, hint = (above.n_bottom, above.frame.anterior) if above else (u0, anterior)
        checked = sacrum_top(shape, u0) if v == SACRUM else shape
        cut = [b for b in checked.touches if b not in ("left", "right")]
        if cut:
            lev.status = "not measurable"
            lev.note(f"cut by the field of view ({', '.join(cut)} border)")
            continue
        sec, note = (measure_sacrum_top if v == SACRUM else measure_body)(shape, u0, hint)
        lev.note(note)
        if sec is None:
            lev.status = "not measurable"
            continue
        sections[v], lev.section = sec, sec
        if checked.touches:
            lev.note(f"touches the {', '.join(checked.touches)} image border")
    _body_indices(levels, sections, verts, t13, l6)
    for i, v in enumerate(verts[:-1]):
        if next_vertebra(v, has_t13=t13, has_l6=l6) == verts[i + 1] and v in sections and verts[i + 1] in sections:
            _pair(levels[i], sections[v], sections[verts[i + 1]])
    rank = {v: k for k, v in enumerate(CRANIOCAUDAL_ORDER)}
    levels += _discs(shapes, sections, t13, l6)
    return sorted(levels, key=lambda lev: 2 * rank[lev.label % DISC_OFFSET] + (lev.kind == "disc"))


def _line(lev: Level, name: str, ends: tuple[np.ndarray, np.ndarray]) -> float | None:
    """Store a measurement line (both ends finite) and return its length, mm."""
    if not all(np.isfinite(p).all() for p in ends):
        return None
    lev.lines[name] = ends
    return float(np.linalg.norm(ends[0] - ends[1]))


def _heights(lev: Level, sec: Section, prefix: str = "") -> dict[str, float | None]:
    out = {pos: _line(lev, f"{prefix}{pos}_height_mm", sec.ends(pos)) for pos in _POSITIONS}
    lev.values.update({f"{prefix}{pos}_height_mm": h for pos, h in out.items()})
    if None in out.values():
        lev.status = "partial"
        lev.note("a height line found no endplate")
    return out


def _body_indices(levels: list[Level], sections: dict[int, Section], verts: list[int], t13: bool, l6: bool) -> None:
    """Heights, depth, ratios, loss against the adjacent levels and Genant grade of every body."""
    heights = {}
    for v, lev in zip(verts, levels):
        if v in sections and v != SACRUM:
            heights[v] = _heights(lev, sections[v])
            lev.values["depth_mm"] = sections[v].depth
    for v, lev in zip(verts, levels):
        if v in heights:
            near = (_prev(v, verts, t13, l6), next_vertebra(v, has_t13=t13, has_l6=l6))
            adjacent = [w for w in near if w in heights]
            h = heights[v]
            lev.values.update(height_indices(h["anterior"], h["middle"], h["posterior"],
                                             [heights[w]["posterior"] for w in adjacent]))


def _prev(v: int, verts: list[int], t13: bool, l6: bool) -> int | None:
    """The vertebra directly above ``v`` when it is in ``verts``."""
    return next((w for w in verts if next_vertebra(w, has_t13=t13, has_l6=l6) == v), None)


def _pair(lev: Level, up: Section, down: Section) -> None:
    """Anterior / posterior distances and slip of the body of ``lev`` over the next one."""
    for side in ("anterior", "posterior"):
        name = f"{side}_distance_to_next_mm"
        lev.values[name] = _line(lev, name, (up.ends(side)[1], down.ends(side)[0]))
    p_up, p_down = up.corner("posterior", "bottom"), down.corner("posterior", "top")
    if np.isfinite(p_up).all() and np.isfinite(p_down).all() and down.depth > 0:
        offset = float((p_up - p_down) @ ortho(down.frame.anterior, down.n_top))
        lev.lines["slip_percent"] = (p_up, p_down)
        lev.values.update(slip_mm=offset, slip_percent=100.0 * offset / down.depth,
                          meyerding_grade=meyerding_grade(100.0 * offset / down.depth))


def _discs(shapes: dict, sections: dict[int, Section], t13: bool, l6: bool) -> list[Level]:
    """Disc levels, measured in a frame bisecting the adjacent endplates."""
    out = []
    for d in sorted(k for k in shapes if is_disc(k)):
        v = d - DISC_OFFSET
        below = next_vertebra(v, has_t13=t13, has_l6=l6)
        lev = Level(d, f"{VERTEBRA_NAMES[v]}-{VERTEBRA_NAMES[below]}" if below else vertebra_name(d), "disc")
        out.append(lev)
        shape, up, down = shapes[d], sections.get(v), sections.get(below)
        if isinstance(shape, str):
            lev.status, lev.reason = "not measurable", shape
            continue
        normals = [s for s in (up.n_bottom if up else None, down.n_top if down else None) if s is not None]
        u0 = unit(np.sum(normals, 0)) if normals else _smallest_axis(shape.points)
        hint = unit(sum(s.frame.anterior for s in (up, down) if s)) if up or down else ANTERIOR
        sec, note = measure_body(shape, u0, hint)
        lev.note(note)
        if sec is None:
            lev.status = "not measurable"
            continue
        lev.section = sec
        _heights(lev, sec, "disc_")
        if shape.touches:
            lev.note(f"touches the {', '.join(shape.touches)} image border")
    return out
