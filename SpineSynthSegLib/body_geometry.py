"""One vertebral body (or disc) measured in its own anatomical frame: the geometry of `measure`.

* cranio-caudal axis ``u``: bisector of the superior and inferior endplate normals. The endplates
  are planes fitted (robust least squares) to the outermost mask crossings of a 13 x 7 grid of
  lines over the central half of the body; the first ``u`` comes from the neighbours' centroids
  (else the smallest principal axis) and is refined until it moves less than 0.2 degrees;
* antero-posterior axis ``a``: the principal axis of the body's cross-section (perpendicular to
  ``u``) closest to the header's anterior direction, which also gives its sign;
* mid-sagittal plane: through the body's centroid, spanned by ``u`` and ``a``.

Whole-vertebra masks (VerSe, SPIDER, TotalSegmentator) are reduced to the body first: the largest
component of the mid-sagittal section is the body; what lies behind it (arch, processes) is cut.
Heights, depth and the bundle of lines: `measure`'s docstring. Coordinates are world LPS mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .io import Volume

INWARD_SHIFT = 0.10  #: fraction of the depth by which the anterior/posterior lines sit inside the walls
EXTENT_PERCENTILE = 80.0  #: robust bounding rectangle: percentile of the sampled wall positions
ANTERIOR, SUPERIOR = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])  # LPS


def unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def ortho(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``v`` without its component along unit ``u``, normalised."""
    return unit(v - np.dot(v, u) * u)


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


class Sampler:
    """Linear interpolation of one structure's mask (a crop of the volume) at world points."""

    def __init__(self, field_: np.ndarray, lin: np.ndarray, off: np.ndarray) -> None:
        self.field, self.lin, self.off = field_, lin, off

    @classmethod
    def from_mask(cls, vol: Volume, mask: np.ndarray, start: np.ndarray) -> Sampler:
        inv = np.linalg.inv(vol.affine)
        return cls(mask.astype(np.float32), inv[:3, :3], inv[:3, 3] - start)

    def voxel_centres(self) -> np.ndarray:
        """World points of the crop's voxels, shape (*field.shape, 3)."""
        return (np.moveaxis(np.indices(self.field.shape, dtype=float), 0, -1) - self.off) @ np.linalg.inv(self.lin).T

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        idx = pts.reshape(-1, 3) @ self.lin.T + self.off
        return ndimage.map_coordinates(self.field, idx.T, order=1, cval=0.0).reshape(pts.shape[:-1])


@dataclass
class Shape:
    """One structure: voxel centres (world LPS), its mask sampler, line step and voxel size (mm).

    ``border``: per point, a bit set of the image faces it lies on; ``faces``: their names.
    """

    label: int
    points: np.ndarray
    sampler: Sampler
    step: float
    voxel: float
    border: np.ndarray | None = None
    faces: tuple[str, ...] = ()

    def subset(self, keep: np.ndarray, sampler: Sampler | None = None) -> Shape:
        border = None if self.border is None else self.border[keep]
        return Shape(self.label, self.points[keep], sampler or self.sampler, self.step, self.voxel, border, self.faces)

    @property
    def touches(self) -> list[str]:
        """Anatomical names of the image borders the structure touches."""
        bits = int(np.bitwise_or.reduce(self.border)) if self.border is not None and self.border.size else 0
        return sorted({name for k, name in enumerate(self.faces) if bits >> k & 1})


def _crossings(sampler: Sampler, starts: np.ndarray, direction: np.ndarray, reach: float, step: float,
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
    return unit(frame.superior - coef[1] * frame.anterior - coef[2] * frame.left)


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


def _section(shape: Shape, f: Frame, top_only: bool = False) -> Section | None:
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
    a0 = ortho(hint, u)
    l0 = np.cross(u, a0)
    d = points - points.mean(0)
    w, vecs = np.linalg.eigh(np.cov(np.stack([d @ a0, d @ l0])))
    if w[1] < 1.15 * w[0]:  # nearly circular: principal axes undefined, keep the hint
        return a0
    e = vecs[:, int(np.argmax(np.abs(vecs[0])))]
    return unit(np.sign(e[0]) * (e[0] * a0 + e[1] * l0))


def isolate_body(shape: Shape, u: np.ndarray, anterior: np.ndarray) -> tuple[Shape, int]:
    """Cut the posterior elements of a whole-vertebra mask (the body: largest mid-sagittal piece).

    Returns:
        The body, and where the rest lay: +1 behind the body (as expected), -1 in front of it (a
        vote that the header's anterior direction is wrong; nothing is cut then), 0 nowhere.
    """
    frame = Frame(shape.points.mean(0), u, ortho(anterior, u))
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
    return shape.subset(x >= x0 - st, Sampler(np.where(keep, s.field, 0.0).astype(np.float32), s.lin, s.off)), 1


def measure_body(shape: Shape, u0: np.ndarray, hint: np.ndarray) -> tuple[Section | None, str]:
    """Frame (``u`` refined to the endplates' bisector) and section of a body or disc."""
    u, sec = unit(u0), None
    for _ in range(4):
        sec = _section(shape, Frame(shape.points.mean(0), u, _principal_anterior(shape.points, u, hint)))
        if sec is None:
            return None, "no endplates found through the centroid"
        new = unit(sec.n_top + sec.n_bottom)
        if _angle(new, u) < 0.2:
            break
        u = new
    return sec, ""


def sacrum_top(shape: Shape, u: np.ndarray, slab_mm: float = 25.0) -> Shape:
    """The top ``slab_mm`` of the sacrum along ``u`` (S1's body below its superior endplate)."""
    h = shape.points @ u
    return shape.subset(h >= h.max() - slab_mm)


def measure_sacrum_top(shape: Shape, u0: np.ndarray, hint: np.ndarray) -> tuple[Section | None, str]:
    """The superior endplate of S1, in a frame from that endplate alone."""
    u, sec = unit(u0), None
    for _ in range(4):
        top = sacrum_top(shape, u)
        sec = _section(top, Frame(top.points.mean(0), u, ortho(hint, u)), top_only=True)
        if sec is None:
            return None, "no superior endplate found"
        if _angle(sec.n_top, u) < 0.2:
            break
        u = sec.n_top
    return sec, ""
