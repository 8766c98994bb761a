"""Vertebral body and disc measurements from an instance segmentation (heights, distances, grades).

Each body is measured in its own anatomical frame, never along the image axes:

* cranio-caudal axis ``u``: bisector of the superior and inferior endplate normals. The endplates
  are planes fitted (robust least squares) to the outermost mask crossings of a 13 x 7 grid of
  lines over the central half of the body; the first ``u`` comes from the neighbours' centroids
  (else the smallest principal axis) and is refined until it moves less than 0.2 degrees;
* antero-posterior axis ``a``: the principal axis of the body's cross-section (perpendicular to
  ``u``) closest to the header's anterior direction, which also gives its sign;
* mid-sagittal plane: through the body's centroid, spanned by ``u`` and ``a``.

Whole-vertebra masks (VerSe, SPIDER, TotalSegmentator) are reduced to the body first: the largest
component of the mid-sagittal section is the body; what lies behind it (arch, processes) is cut.

In the mid-sagittal plane (after Schneider et al. 2023, seed 004: bounding trapezoid, lines 10 %
inward) the depth is the robust bounding rectangle of the section (80th percentile of the wall
positions sampled at 15-85 % of the centre height). The anterior / posterior height lines run
parallel to ``u``, ``INWARD_SHIFT`` x depth inside the innermost of the walls measured near both
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

from .errors import InputError
from .io import Volume
from .labels import CRANIOCAUDAL_ORDER, DISC_OFFSET, VERTEBRA_NAMES, is_disc, is_vertebra, next_vertebra, vertebra_name

log = logging.getLogger(__name__)

INWARD_SHIFT = 0.10  #: fraction of the depth by which the anterior/posterior lines sit inside the walls
EXTENT_PERCENTILE = 80.0  #: robust bounding rectangle: percentile of the sampled wall positions
GENANT_BANDS = (20.0, 25.0, 40.0)  #: % height loss where Genant grades 1, 2, 3 begin
MEYERDING_BANDS = (10.0, 25.0, 50.0, 75.0, 100.0)  #: % slip where grades I-IV begin; V above 100
MIN_VOLUME_MM3 = 400.0  #: smaller structures are reported as too small
SACRUM = 26
_POSITIONS = ("anterior", "middle", "posterior")
_ANTERIOR, _SUPERIOR = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])  # LPS


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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _ortho(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``v`` without its component along unit ``u``, normalised."""
    return _unit(v - np.dot(v, u) * u)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(a @ b, -1.0, 1.0))))


@dataclass(frozen=True)
class Frame:
    """Anatomical frame (LPS mm): local x anterior, y left, h superior; ``origin`` at (0, 0, 0)."""

    origin: np.ndarray
    superior: np.ndarray
    anterior: np.ndarray
    left: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "left", np.cross(self.superior, self.anterior))

    def point(self, x, y, h) -> np.ndarray:
        """World point(s) of local coordinates; arrays broadcast, giving shape (..., 3)."""
        x, y, h = (np.asarray(v, float)[..., None] for v in np.broadcast_arrays(x, y, h))
        return self.origin + x * self.anterior + y * self.left + h * self.superior

    def local(self, pts: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> local (x, y, h) (N, 3)."""
        return (np.asarray(pts) - self.origin) @ np.stack([self.anterior, self.left, self.superior], 1)


class _Sampler:
    """Linear interpolation of one structure's mask (a crop of the volume) at world points."""

    def __init__(self, field_: np.ndarray, lin: np.ndarray, off: np.ndarray) -> None:
        self.field, self.lin, self.off = field_, lin, off

    @classmethod
    def from_mask(cls, vol: Volume, mask: np.ndarray, start: np.ndarray) -> _Sampler:
        inv = np.linalg.inv(vol.affine)
        return cls(mask.astype(np.float32), inv[:3, :3], inv[:3, 3] - start)

    def voxel_centres(self) -> np.ndarray:
        """World points of the crop's voxels, shape (*field.shape, 3)."""
        return (np.moveaxis(np.indices(self.field.shape, dtype=float), 0, -1) - self.off) @ np.linalg.inv(self.lin).T

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        idx = pts.reshape(-1, 3) @ self.lin.T + self.off
        return ndimage.map_coordinates(self.field, idx.T, order=1, cval=0.0).reshape(pts.shape[:-1])


@dataclass
class _Shape:
    """One structure: voxel centres (world LPS), its mask sampler, line step and voxel size (mm).

    ``border``: per point, a bit set of the image faces it lies on; ``faces``: their names.
    """

    label: int
    points: np.ndarray
    sampler: _Sampler
    step: float
    voxel: float
    border: np.ndarray | None = None
    faces: tuple[str, ...] = ()

    def subset(self, keep: np.ndarray, sampler: _Sampler | None = None) -> _Shape:
        border = None if self.border is None else self.border[keep]
        return _Shape(self.label, self.points[keep], sampler or self.sampler, self.step, self.voxel, border, self.faces)

    @property
    def touches(self) -> list[str]:
        """Anatomical names of the image borders the structure touches."""
        bits = int(np.bitwise_or.reduce(self.border)) if self.border is not None and self.border.size else 0
        return sorted({name for k, name in enumerate(self.faces) if bits >> k & 1})


def _crossings(sampler: _Sampler, starts: np.ndarray, direction: np.ndarray, reach: float, step: float,
               outer: bool = False, gap_mm: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel 0.5 crossings of the mask along lines through ``starts`` (signed mm from the start).

    ``outer``: the two outermost crossings (the farthest segmented points); otherwise the ends of
    the inside run holding the start (else the inside sample nearest to it), gaps < ``gap_mm``
    bridged. NaN where a line misses the mask or the mask reaches ``reach``.
    """
    n = math.ceil(reach / step)
    t = np.arange(-n, n + 1) * step
    v = sampler(starts[:, None, :] + t[None, :, None] * direction)
    inside = v >= 0.5
    if not outer:
        inside |= ndimage.binary_closing(inside, structure=np.ones((1, max(1, round(gap_mm / step)) + 1), bool))
    lo, hi = np.full(len(starts), np.nan), np.full(len(starts), np.nan)
    for i, row in enumerate(inside):
        idx = np.flatnonzero(row)
        if idx.size == 0:
            continue
        if outer:
            k, j = int(idx[0]), int(idx[-1])
        else:
            s = n if row[n] else int(idx[np.argmin(np.abs(idx - n))])
            after, before = np.flatnonzero(~row[s:]), np.flatnonzero(~row[: s + 1])
            j = s + after[0] - 1 if after.size else len(row) - 1
            k = before[-1] + 1 if before.size else 0
        if k == 0 or j == len(row) - 1:
            continue
        hi[i] = t[j] + step * np.clip((v[i, j] - 0.5) / max(v[i, j] - v[i, j + 1], 1e-6), 0, 1)
        lo[i] = t[k] - step * np.clip((v[i, k] - 0.5) / max(v[i, k] - v[i, k - 1], 1e-6), 0, 1)
    return lo, hi


def _consensus(values: np.ndarray, voxel: float) -> float:
    """Mean of a bundle's crossings (NaN: under half of the lines valid).

    A plain mean, not a median: on jagged masks a bundle is often bimodal, and the mean moves
    smoothly where a median would jump between the modes under resampling.
    """
    ok = values[np.isfinite(values)]
    if ok.size < values.size / 2:
        return math.nan
    return float(ok.mean())


def _plane_normal(x: np.ndarray, y: np.ndarray, h: np.ndarray, frame: Frame) -> np.ndarray | None:
    """Unit normal (superior side, LPS) of the robust least-squares plane h = c + gx x + gy y."""
    ok = np.isfinite(h)
    if ok.sum() < 6:
        return None
    design, h = np.stack([np.ones(ok.sum()), x[ok], y[ok]], 1), h[ok]
    for _ in range(2):
        coef = np.linalg.lstsq(design, h, rcond=None)[0]
        res = np.abs(h - design @ coef)
        keep = res <= max(3.0 * 1.4826 * float(np.median(res)), 1.0)
        if keep.sum() < 6 or keep.all():
            break
        design, h = design[keep], h[keep]
    return _unit(frame.superior - coef[1] * frame.anterior - coef[2] * frame.left)


@dataclass
class Section:
    """A body's or disc's geometry in its mid-sagittal plane (local frame coordinates, mm).

    Attributes:
        frame: the anatomical frame (origin at the structure's centroid).
        x_ant, x_post: sides of the section's robust bounding rectangle; ``depth`` their distance.
        width: lateral extent through the centre.
        lines: 'anterior' / 'middle' / 'posterior' -> (x, h_top, h_bottom); NaN where not found.
        n_top, n_bottom: unit normals of the superior / inferior endplate planes (LPS, superior).
        corners: (side, 'top'/'bottom') -> x of the wall 15 % of the height from that endplate.
    """

    frame: Frame
    x_ant: float
    x_post: float
    width: float
    lines: dict[str, tuple[float, float, float]]
    n_top: np.ndarray
    n_bottom: np.ndarray
    corners: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def depth(self) -> float:
        return self.x_ant - self.x_post

    def ends(self, pos: str) -> tuple[np.ndarray, np.ndarray]:
        """World (LPS) top and bottom ends of a height line."""
        x, top, bottom = self.lines[pos]
        return self.frame.point(x, 0.0, top), self.frame.point(x, 0.0, bottom)

    def corner(self, side: str, end: str) -> np.ndarray:
        """World point of a corner: the wall's position there, at the endplate's level."""
        _, top, bottom = self.lines[side]
        return self.frame.point(self.corners.get((side, end), math.nan), 0.0, top if end == "top" else bottom)


def _section(shape: _Shape, f: Frame, top_only: bool = False) -> Section | None:
    """Extent, endplate planes, height lines and corners in frame ``f`` (``top_only``: sacrum)."""
    st, vx, sampler = shape.step, shape.voxel, shape.sampler
    ext = np.abs(f.local(shape.points)).max(0) + 4.0 * vx  # x, y, h half-extents (+ margin)

    def reach(axis: int, start: float) -> float:
        """Line half-length covering the structure from a start at local coordinate ``start``."""
        return float(ext[axis] + abs(start))

    ys = np.array([-vx, 0.0, vx])

    def walls(x: float, h) -> tuple[float, float]:
        """Median posterior / anterior wall positions on antero-posterior lines through (x, h[s])."""
        starts = f.point(x, ys[None, :], np.atleast_1d(h)[:, None]).reshape(-1, 3)
        lo, hi = _crossings(sampler, starts, f.anterior, reach(0, x), st)
        ok = np.isfinite(lo)
        return (x + float(np.median(lo[ok])), x + float(np.median(hi[ok]))) if ok.any() else (math.nan, math.nan)

    lo, hi = _crossings(sampler, f.origin[None], f.superior, reach(2, 0.0), st, outer=not top_only)
    if not np.isfinite(hi[0]) or not (top_only or np.isfinite(lo[0])):
        return None
    h_lo = hi[0] - 10.0 * vx if top_only or not np.isfinite(lo[0]) else lo[0]
    hc, h0 = (hi[0] + h_lo) / 2, hi[0] - h_lo
    starts = f.point(0.0, ys[None, :], hc + h0 * np.linspace(-0.35, 0.35, 9)[:, None]).reshape(-1, 3)
    alo, ahi = _crossings(sampler, starts, f.anterior, reach(0, 0.0), st)
    if np.isfinite(alo).sum() < 3:
        return None
    x_post = float(np.nanpercentile(alo, 100 - EXTENT_PERCENTILE))
    x_ant = float(np.nanpercentile(ahi, EXTENT_PERCENTILE))
    depth, xm = x_ant - x_post, (x_ant + x_post) / 2
    llo, lhi = _crossings(sampler, f.point(xm, 0.0, hc)[None], f.left, reach(1, 0.0), st)
    width, ym = (float(lhi[0] - llo[0]), float(lhi[0] + llo[0]) / 2) if np.isfinite(llo[0]) else (depth, 0.0)
    gx, gy = (g.ravel() for g in np.meshgrid(xm + np.linspace(-0.25, 0.25, 13) * depth,
                                             ym + np.linspace(-0.25, 0.25, 7) * width))
    plo, phi = _crossings(sampler, f.point(gx, gy, hc), f.superior, reach(2, hc), st, outer=not top_only)
    n_top = _plane_normal(gx, gy, hc + phi, f)
    n_bottom = n_top if top_only else _plane_normal(gx, gy, hc + plo, f)
    if n_top is None or n_bottom is None:
        return None
    band = h0 * np.linspace(0.2, 0.4, 5)  # 10-30 % of the height from each endplate
    wall = np.array([walls(xm, hc + band)] + ([] if top_only else [walls(xm, hc - band)]))
    x_p = float(np.nanmax(np.append(wall[:, 0], x_post))) + INWARD_SHIFT * depth
    x_a = float(np.nanmin(np.append(wall[:, 1], x_ant))) - INWARD_SHIFT * depth
    lines = {}
    bx = min(2.0 * vx, 0.07 * depth)
    dxs, dys = np.linspace(-bx, bx, 9), np.linspace(-3.0, 3.0, 13) * vx
    for pos, x in (("anterior", x_a), ("middle", (x_a + x_p) / 2), ("posterior", x_p)):
        starts = f.point(x + dxs[:, None], dys[None, :], hc).reshape(-1, 3)
        blo, bhi = _crossings(sampler, starts, f.superior, reach(2, hc), st, outer=not top_only)
        lines[pos] = (x, hc + _consensus(bhi, vx), math.nan if top_only else hc + _consensus(blo, vx))
    corners = {}
    for side, k in (("anterior", 1), ("posterior", 0)):
        x, top, bottom = lines[side]
        inset = 0.1 * depth if top_only else 0.15 * (top - bottom)
        for end, h in (("top", top - inset), ("bottom", bottom + inset)):
            if np.isfinite(h):
                corners[side, end] = walls(x, h)[k]
    return Section(f, x_ant, x_post, width, lines, n_top, n_bottom, corners)


def _principal_anterior(points: np.ndarray, u: np.ndarray, hint: np.ndarray) -> np.ndarray:
    """The cross-section's principal axis (perpendicular to ``u``) closest to ``hint``, signed by it."""
    a0 = _ortho(hint, u)
    l0 = np.cross(u, a0)
    d = points - points.mean(0)
    w, vecs = np.linalg.eigh(np.cov(np.stack([d @ a0, d @ l0])))
    if w[1] < 1.15 * w[0]:  # nearly circular: principal axes undefined, keep the hint
        return a0
    e = vecs[:, int(np.argmax(np.abs(vecs[0])))]
    return _unit(np.sign(e[0]) * (e[0] * a0 + e[1] * l0))


def _isolate_body(shape: _Shape, u: np.ndarray, anterior: np.ndarray) -> tuple[_Shape, int]:
    """Cut the posterior elements of a whole-vertebra mask (the body: largest mid-sagittal piece).

    Returns:
        The body, and where the rest lay: +1 behind the body (as expected), -1 in front of it (a
        vote that the header's anterior direction is wrong; nothing is cut then), 0 nowhere.
    """
    frame = Frame(shape.points.mean(0), u, _ortho(anterior, u))
    x, h = frame.local(shape.points)[:, [0, 2]].T
    st = shape.voxel / 2
    xs, hs = np.arange(x.min() - 2, x.max() + 2, st), np.arange(h.min() - 2, h.max() + 2, st)
    comp, n = ndimage.label(shape.sampler(frame.origin + xs[:, None, None] * frame.anterior
                                          + hs[None, :, None] * u) >= 0.5)
    if n == 0:
        return shape, 0
    body_x = xs[np.flatnonzero((comp == np.argmax(np.bincount(comp.ravel())[1:]) + 1).any(1))]
    x0, x1 = float(body_x.min()), float(body_x.max())
    behind, front = (x < x0 - 0.3 * (x1 - x0)).mean(), (x > x1 + 0.3 * (x1 - x0)).mean()
    if max(behind, front) <= 0.02:
        return shape, 0
    if front > behind:
        return shape, -1
    s = shape.sampler
    keep = frame.local(s.voxel_centres().reshape(-1, 3))[:, 0].reshape(s.field.shape) >= x0 - st
    return shape.subset(x >= x0 - st, _Sampler(np.where(keep, s.field, 0.0).astype(np.float32), s.lin, s.off)), 1


def _measure_body(shape: _Shape, u0: np.ndarray, hint: np.ndarray) -> tuple[Section | None, str]:
    """Frame (``u`` refined to the endplates' bisector) and section of a body or disc."""
    u, sec = _unit(u0), None
    for _ in range(4):
        sec = _section(shape, Frame(shape.points.mean(0), u, _principal_anterior(shape.points, u, hint)))
        if sec is None:
            return None, "no endplates found through the centroid"
        new = _unit(sec.n_top + sec.n_bottom)
        if _angle(new, u) < 0.2:
            break
        u = new
    return sec, ""


def _sacrum_top(shape: _Shape, u: np.ndarray, slab_mm: float = 25.0) -> _Shape:
    """The top ``slab_mm`` of the sacrum along ``u`` (S1's body below its superior endplate)."""
    h = shape.points @ u
    return shape.subset(h >= h.max() - slab_mm)


def _measure_sacrum_top(shape: _Shape, u0: np.ndarray, hint: np.ndarray) -> tuple[Section | None, str]:
    """The superior endplate of S1, in a frame from that endplate alone."""
    u, sec = _unit(u0), None
    for _ in range(4):
        top = _sacrum_top(shape, u)
        sec = _section(top, Frame(top.points.mean(0), u, _ortho(hint, u)), top_only=True)
        if sec is None:
            return None, "no superior endplate found"
        if _angle(sec.n_top, u) < 0.2:
            break
        u = sec.n_top
    return sec, ""


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


def _shapes(vol: Volume, source: str) -> dict[int, _Shape | str]:
    """Every vertebra / disc label present: its largest component (holes filled), or why unusable."""
    arr, spacing = vol.array, np.asarray(vol.spacing)
    if arr.ndim != 3 or min(arr.shape) < 2:
        raise InputError(f"a 3D segmentation is needed, got shape {arr.shape} (2D input)", source)
    voxel = float(np.prod(spacing) ** (1 / 3))
    margin = np.ceil(3.0 + 4.0 * voxel / spacing).astype(int)
    faces = _face_names(vol)
    out: dict[int, _Shape | str] = {}
    for label, sl in enumerate(ndimage.find_objects(np.where(arr < 2 * DISC_OFFSET, arr, 0).astype(np.int32)), 1):
        if sl is None or not (is_vertebra(label) or is_disc(label)):
            continue
        start = np.array([max(s.start - m, 0) for s, m in zip(sl, margin)])
        stop = np.array([min(s.stop + m, n) for s, m, n in zip(sl, margin, arr.shape)])
        mask = arr[tuple(slice(a, b) for a, b in zip(start, stop))] == label
        comp, n = ndimage.label(mask, np.ones((3, 3, 3), bool))
        if n > 1:
            sizes = np.bincount(comp.ravel())[1:]
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
        out[label] = _Shape(label, idx @ (vol.direction * spacing).T + np.asarray(vol.origin),
                            _Sampler.from_mask(vol, mask, start), float(spacing.min()) / 4, voxel, border, faces)
    return out


def _smallest_axis(points: np.ndarray) -> np.ndarray:
    """Smallest principal axis of a point cloud, oriented superior."""
    u = np.linalg.eigh(np.cov((points - points.mean(0)).T))[1][:, 0]
    return u if u @ _SUPERIOR >= 0 else -u


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
    verts = [v for v in CRANIOCAUDAL_ORDER if v in shapes and is_vertebra(v)]
    if not verts:
        raise InputError("no vertebrae in the segmentation (labels 1-28 in the output convention)", source)
    centres = {k: s.points.mean(0) for k, s in shapes.items() if isinstance(s, _Shape)}
    t13, l6 = 28 in verts, 25 in verts
    levels, sections = [Level(v, vertebra_name(v), "vertebra") for v in verts], {}
    u0s, bodies = {}, {}
    for i, v in enumerate(verts):
        if isinstance(shapes[v], _Shape):
            near = [centres[w] for w in verts[max(i - 1, 0):i + 2] if w in centres]
            u0s[v] = _unit(near[0] - near[-1]) if len(near) > 1 else _smallest_axis(shapes[v].points)
    flipped = False
    for _ in range(2):  # the arches vote on the header's anterior direction
        anterior = -_ANTERIOR if flipped else _ANTERIOR
        isolated = {v: _isolate_body(shapes[v], u0s[v], anterior) for v in u0s if v != SACRUM}
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
        checked = _sacrum_top(shape, u0) if v == SACRUM else shape
        cut = [b for b in checked.touches if b not in ("left", "right")]
        if cut:
            lev.status = "not measurable"
            lev.note(f"cut by the field of view ({', '.join(cut)} border)")
            continue
        sec, note = (_measure_sacrum_top if v == SACRUM else _measure_body)(shape, u0, hint)
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
        offset = float((p_up - p_down) @ _ortho(down.frame.anterior, down.n_top))
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
        u0 = _unit(np.sum(normals, 0)) if normals else _smallest_axis(shape.points)
        hint = _unit(sum(s.frame.anterior for s in (up, down) if s)) if up or down else _ANTERIOR
        sec, note = _measure_body(shape, u0, hint)
        lev.note(note)
        if sec is None:
            lev.status = "not measurable"
            continue
        lev.section = sec
        _heights(lev, sec, "disc_")
        if shape.touches:
            lev.note(f"touches the {', '.join(shape.touches)} image border")
    return out
