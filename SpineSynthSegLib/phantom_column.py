"""Column geometry of the procedural phantom: bodies and discs as stacked rigid wedges.

`layout` samples the elements (heights, diameters, wedge angles, fractures) from a
`phantom.PhantomConfig`, stacks them from the top level down to S1 and places the column in the
torso; `draw_column` rasterises the bodies, discs, endplates and posterior elements on the grid.
`phantom.generate_phantom` adds the soft tissues around them; `phantom_truth` replays `layout` to
get each element's exact boundary surfaces.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from .labels import VERTEBRA_NAMES, disc_label

if TYPE_CHECKING:
    from .phantom import PhantomConfig

log = logging.getLogger(__name__)

SACRUM_BELOW = 27  # level slot of the sacral segment below S1 (no output id: generation only)
GAP_MM = 3.0  # between a body's posterior wall and the canal (posterior longitudinal ligament)
LAMINA_MM = 5.0  # lamina thickness


def level_label(vertebra: int, part: int) -> int:
    """Generation id of part 0-4 (marrow, cortex, endplate, nucleus, annulus) of a level."""
    return 20 + 5 * (vertebra - 1) + part


@dataclass
class Element:
    kind: str  # 'body' or 'disc'
    vertebra: int  # body: its id; disc: id of the vertebra above
    height: float  # mm along the column axis, at the centre
    depth: float = 0.0  # antero-posterior diameter, mm
    width: float = 0.0  # lateral diameter, mm
    target: int = 0
    dist: int = 0  # levels above S1
    alpha: float = 0.0  # sagittal wedge, rad (+ = anterior taller: lordotic)
    beta: float = 0.0  # lateral wedge, rad
    nucleus: float = 0.5  # nucleus radius as a fraction of the disc radius (0 = none)
    bulge: float = 0.03
    canal_ap: float = 15.0
    canal_w: float = 20.0
    spinous: float = 28.0
    slope: float = 0.2
    fracture: float = 0.0  # anterior height loss of a simulated wedge fracture (fraction)


def _size_factor(v: int) -> float:
    if 20 <= v <= 25:
        return (0.93, 0.96, 1.0, 1.0, 1.0, 1.0)[v - 20]
    return {26: 1.05, SACRUM_BELOW: 0.85, 28: 0.92}.get(v, 0.9 - 0.035 * (19 - v))


def _plan(cfg: PhantomConfig, rng: np.random.Generator) -> tuple[list[Element], float, float]:
    """Sample the elements (bodies, discs) and the initial tilt of the column."""
    u = rng.uniform
    h_body, h_disc = u(*cfg.body_height_mm), u(*cfg.disc_height_mm)
    depth, width = u(*cfg.body_depth_mm), u(*cfg.body_width_mm)
    cap, cw, sp_len = u(*cfg.canal_depth_mm), u(*cfg.canal_width_mm), u(24.0, 32.0)
    levels = cfg.levels()
    els: list[Element] = []
    for i, v in enumerate(levels):
        f, dist = _size_factor(v), len(levels) - 1 - i
        thor = v < 20 or v == 28
        j = 1.0 + u(-cfg.level_jitter, cfg.level_jitter, size=4)
        hf = 1.05 if v == 26 else 1 - 0.6 * (1 - f)
        wf = 1.1 if v == 26 else 1.0
        els.append(Element("body", v, h_body * hf * j[0], depth * f * j[1], width * f * wf * j[2], v, dist,
                            canal_ap=cap * (0.95 if thor else 1.0), canal_w=cw * (0.8 if thor else 1.0),
                            spinous=sp_len * f * (0.35 if v == 26 else 1.0), slope=0.9 if thor else 0.2))
        if v != 26:
            df = 0.65 if thor else {1: 0.95, 2: 1.05, 3: 1.0, 4: 0.92}.get(dist, 0.85)
            els.append(Element("disc", v, h_disc * df * j[3], target=disc_label(v), dist=dist, nucleus=u(0.45, 0.6)))
    if cfg.sacrum_below_s1:
        els.append(Element("disc", 26, 2.5, nucleus=0.0))
        els.append(Element("body", SACRUM_BELOW, h_body * 0.8, depth * 0.85, width * 0.85, canal_ap=cap * 0.7,
                            canal_w=cw * 0.8, spinous=sp_len * 0.3))
    for k, e in enumerate(els):
        if e.kind == "disc":
            for name in ("depth", "width", "canal_ap", "canal_w"):
                setattr(e, name, (getattr(els[k - 1], name) + getattr(els[k + 1], name)) / 2)
            if e.vertebra == 26:  # the S1-S2 remnant disc is much smaller than a lumbar disc
                e.depth, e.width = 0.55 * e.depth, 0.55 * e.width
    # Sagittal wedges: lordosis over L1..(last lumbar)-S1, mild kyphosis above, sacral kyphosis below.
    lumbar = [e for e in els if 20 <= e.vertebra <= 25]
    weights = np.array([{1: 3.0, 2: 2.0, 3: 1.5, 4: 1.2}.get(e.dist, 1.0) if e.kind == "disc"
                        else (1.5 if e.dist == 1 else 0.3) for e in lumbar])
    lordosis = math.radians(u(*cfg.lordosis_deg))
    for e, w in zip(lumbar, weights / max(weights.sum(), 1e-9)):
        e.alpha = lordosis * w + math.radians(rng.normal(0.0, 1.0))
    for e in els:
        if e.vertebra < 20 or e.vertebra == 28:
            e.alpha = -math.radians(u(0.5, 1.5) if e.kind == "body" else u(1.5, 3.0))
        elif e.vertebra == 26:
            e.alpha = -math.radians(u(5.0, 15.0) if e.kind == "body" else 3.0)
        elif e.vertebra == SACRUM_BELOW:
            e.alpha = -math.radians(u(8.0, 15.0))
    if rng.random() < cfg.wedge_fracture_prob:
        candidates = [e for e in els if e.kind == "body" and e.vertebra not in (26, SACRUM_BELOW)]
        e = candidates[int(rng.integers(len(candidates)))]
        loss = u(*cfg.wedge_fracture_loss)
        e.alpha += math.atan(-loss * e.height / e.depth)  # anterior height (1 - loss) x posterior
        e.height *= 1 - loss / 2
        e.fracture = loss
        log.debug("wedge fracture of %s: anterior height loss %.0f %%", VERTEBRA_NAMES[e.vertebra], 100 * loss)
    for e in els:
        if e.kind == "disc" and e.target and rng.random() < cfg.disc_degeneration_prob:
            e.height *= u(0.45, 0.7)
            e.nucleus = 0.0 if rng.random() < 0.5 else e.nucleus * 0.5
            e.bulge = 0.08
    main = [e for e in els if e.vertebra != SACRUM_BELOW and not (e.kind == "disc" and e.vertebra == 26)]
    cobb = math.radians(u(*cfg.scoliosis_deg)) * (1.0 if rng.random() < 0.5 else -1.0)
    w = np.sin(np.pi * (np.arange(len(main)) + 0.5) / len(main))
    for e, wi in zip(main, w / w.sum()):
        e.beta = cobb * wi
    hs = [e.height for e in main]
    half_a = np.cumsum([e.alpha for e in main]) - np.array([e.alpha for e in main]) / 2
    half_b = np.cumsum([e.beta for e in main]) - np.array([e.beta for e in main]) / 2
    theta0 = -float(np.average(half_a, weights=hs)) + math.radians(rng.normal(0.0, 3.0))
    return els, theta0, -float(np.average(half_b, weights=hs))


def _rot(alpha: float, beta: float) -> np.ndarray:
    """Local rotation: ``alpha`` tilts the axis towards posterior, then ``beta`` towards axis 2."""
    ca, sa, cb, sb = math.cos(alpha), math.sin(alpha), math.cos(beta), math.sin(beta)
    sagittal = np.array([[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]])
    return sagittal @ np.array([[cb, 0.0, -sb], [0.0, 1.0, 0.0], [sb, 0.0, cb]])


def _voxel_along(n: np.ndarray, spacing: np.ndarray) -> float:
    """Thickness (mm) of a slab with normal ``n`` that always holds a voxel centre."""
    return float(min(s / abs(c) for s, c in zip(spacing, n) if abs(c) > 1e-6))


def _build(els: list[Element], theta0: float, phi0: float, spacing: np.ndarray) -> tuple[list, list]:
    """Stack the elements: boundary frames (point, rotation) and mid frames, mm, axis-0 down."""
    rot, point = _rot(theta0, phi0), np.zeros(3)
    bounds, mids = [(point, rot)], []
    for e in els:
        if e.kind == "disc":  # keep the posterior / lateral height >= 35 % of the centre height
            lim_a, lim_b = math.atan(1.3 * e.height / e.depth), math.atan(1.3 * e.height / e.width)
            e.alpha, e.beta = min(max(e.alpha, -lim_a), lim_a), min(max(e.beta, -lim_b), lim_b)
        mid = rot @ _rot(e.alpha / 2, e.beta / 2)
        if e.kind == "disc":  # and at least one voxel thick
            e.height = max(e.height, 1.1 * _voxel_along(mid[:, 0], spacing))
        new = point + e.height * mid[:, 0]
        mids.append(((point + new) / 2, mid))
        point, rot = new, rot @ _rot(e.alpha, e.beta)
        bounds.append((point, rot))
    return bounds, mids


def _rim(bound: tuple, e: Element) -> np.ndarray:
    p, r = bound
    return np.array([p + sa * e.depth / 2 * r[:, 1] + sl * e.width / 2 * r[:, 2] for sa in (-1, 1) for sl in (-1, 1)])


def _place(cfg: PhantomConfig, els: list[Element], theta0: float, phi0: float, rng: np.random.Generator) -> tuple:
    """Build the column and fit it along axis 0 (shorten it if needed); centre it on axis 2."""
    spacing = np.asarray(cfg.spacing)
    fov0 = cfg.shape[0] * spacing[0]
    margin = 4.0 + spacing[0]
    room = fov0 - 2 * margin
    s1 = next(k for k, e in enumerate(els) if e.vertebra == 26 and e.kind == "body")
    heights, scale = [e.height for e in els], 1.0
    for _ in range(8):
        for e, h in zip(els, heights):
            e.height = h * scale
        bounds, mids = _build(els, theta0, phi0, spacing)
        top = _rim(bounds[0], els[0])[:, 0].min()
        full = _rim(bounds[s1 + 1], els[s1])[:, 0].max() - top
        half = mids[s1][0][0] - top
        if full <= room or half <= room:
            shift0 = -fov0 / 2 + margin - top + (rng.uniform(0.0, 1.0) * (room - full) if full <= room else 0.0)
            break
        scale *= 0.99 * room / half
        if scale < 0.5:
            break
    if scale < 0.5 or not (full <= room or half <= room):
        raise ValueError(f"shape/spacing: {fov0:.0f} mm along axis 0 is too short for the levels {cfg.top_level}..S1")
    if scale < 0.9:
        log.warning("phantom column shortened to %.0f %% to fit %.0f mm along axis 0", 100 * scale, fov0)
    centres = np.array([m[0] for m, e in zip(mids, els) if e.kind == "body"])
    shift = np.array([shift0, 0.0, -centres[:, 2].mean()])
    return [(p + shift, r) for p, r in bounds], [(p + shift, r) for p, r in mids]


def _profiles(els: list[Element], bounds: list, mids: list, z: np.ndarray) -> dict[str, np.ndarray]:
    """Per axis-0 slice: body axis (yb, xb), radii, canal centre (yk, xk) and in-slice canal size."""
    rows = []
    for e, (pu, _), (pl, _), (_, rm) in zip(els, bounds[:-1], bounds[1:], mids):
        for t in (0.1, 0.5, 0.9):
            p = pu + t * (pl - pu)
            k = p + (e.depth / 2 + GAP_MM + e.canal_ap / 2) * rm[:, 1]
            rows.append((*p, *k, e.depth / 2, e.width / 2, e.canal_ap / abs(rm[0, 0]), e.canal_w, 1 / abs(rm[0, 0])))
    r = np.array(rows)

    def interp(zcol: int, col: int) -> np.ndarray:
        order = np.argsort(r[:, zcol])
        return np.interp(z, r[order, zcol], r[order, col])[:, None, None]

    return {"yb": interp(0, 1), "xb": interp(0, 2), "yk": interp(3, 4), "xk": interp(3, 5), "ra": interp(0, 6),
            "rl": interp(0, 7), "cap": interp(3, 8), "cw": interp(3, 9), "stretch": interp(3, 10)}


def _box(points: np.ndarray, grid: list[np.ndarray], spacing: np.ndarray) -> tuple[slice, ...] | None:
    sl = []
    for a in range(3):
        n = len(grid[a])
        idx = points[:, a] / spacing[a] + (n - 1) / 2
        lo, hi = max(int(np.floor(idx.min())) - 1, 0), min(int(np.ceil(idx.max())) + 2, n)
        if lo >= hi:
            return None
        sl.append(slice(lo, hi))
    return tuple(sl)


def _local(gs: tuple, p: np.ndarray, r: np.ndarray) -> list[np.ndarray]:
    d = (gs[0] - p[0], gs[1] - p[1], gs[2] - p[2])
    return [d[0] * r[0, c] + d[1] * r[1, c] + d[2] * r[2, c] for c in range(3)]


def ellipse(a: np.ndarray, l: np.ndarray, ra, rl) -> np.ndarray:
    return (a / ra) ** 2 + (l / rl) ** 2 <= 1.0


def _notch(a: np.ndarray, l: np.ndarray, ra, rl, grow: float = 0.0) -> np.ndarray:
    """Posterior concavity of the kidney-shaped cross-section."""
    return ((a - 1.02 * ra) / (0.22 * ra + grow)) ** 2 + (l / (0.32 * rl + grow)) ** 2 < 1.0


def draw_column(cfg: PhantomConfig, els: list[Element], bounds: list, mids: list, grid: list[np.ndarray]) -> tuple:
    """Bodies and discs (painted last), their ligaments, and the posterior-element mask."""
    spacing = np.asarray(cfg.spacing)
    surfaces = []  # boundary: point, rotation, endplate concavity (mm), radii of the adjacent body
    for j, (p, r) in enumerate(bounds):
        body = els[j] if j < len(els) and els[j].kind == "body" else els[j - 1]
        dome = 0.0 if j in (0, len(els)) else (0.045 if els[j].kind == "body" else -0.045) * body.depth
        surfaces.append((p, r, dome, body.depth / 2, body.width / 2))
    pe = np.zeros(cfg.shape, bool)
    paint, ligaments = [], []
    for k, e in enumerate(els):
        pm, rm = mids[k]
        ra, rl = e.depth / 2, e.width / 2
        below = els[k + 1].height if k + 1 < len(els) else 0.3 * e.height
        above = els[k - 1].height if k > 0 else 0.3 * e.height
        ped_w, tp = 0.18 * e.width, (30.0 if e.vertebra == 26 else 18.0 * _size_factor(e.vertebra))
        l_p = e.canal_w / 2 + ped_w / 2 - 1.0
        a1 = ra + GAP_MM + e.canal_ap
        if e.kind == "body":
            h_ext = max(e.height / 2 + below, 0.38 * e.height + e.slope * e.spinous) + 2.0
            a_ext = a1 + LAMINA_MM + e.spinous + 2
            ext = ((-e.height / 2 - above - 2, h_ext), (-ra - 4, a_ext), max(l_p + tp + 1, rl + 4))
        else:
            hh = e.height / 2 + ra * abs(math.tan(e.alpha)) + rl * abs(math.tan(e.beta)) + 3
            ext = ((-hh, hh), (-ra * (1 + e.bulge) - 4, ra * (1 + e.bulge) + 4), rl * (1 + e.bulge) + 4)
        corners = np.array([pm + rm @ np.array([h, a, s * ext[2]]) for h in ext[0] for a in ext[1] for s in (-1, 1)])
        sl = _box(corners, grid, spacing)
        if sl is None:
            continue
        gs = (grid[0][sl[0]][:, None, None], grid[1][sl[1]][None, :, None], grid[2][sl[2]][None, None, :])
        fs = []
        for p, r, dome, sra, srl in surfaces[k:k + 2]:
            h, a, l = _local(gs, p, r)
            fs.append(h - dome * (1.0 - np.minimum((a / sra) ** 2 + (l / srl) ** 2, 1.0)))
        du, dl = fs[0], -fs[1]
        between = (du >= 0) & (dl > 0)
        hn = np.clip((du - dl) / np.maximum(du + dl, 1e-6), -1.0, 1.0)
        hm, a, l = _local(gs, pm, rm)
        if e.kind == "body":
            waist = 1.0 - 0.05 * (1.0 - hn**2)
            rae, rle = ra * waist, rl * waist
        else:
            t, bul = (hn + 1) / 2, 1.0 + e.bulge * (1.0 - hn**2)
            up, lo = els[k - 1], els[k + 1]
            rae = (up.depth * (1 - t) + lo.depth * t) / 2 * bul
            rle = (up.width * (1 - t) + lo.width * t) / 2 * bul
        inside = ellipse(a, l, rae, rle) & ~_notch(a, l, rae, rle)
        region = between & inside
        ligaments.append((sl, between & ellipse(a, l, rae + GAP_MM, rle + GAP_MM) & (np.abs(l) < 0.45 * rle) & ~inside))
        values = np.zeros(region.shape, np.int32)
        if e.kind == "disc":
            nf = e.nucleus + 1e-6
            nucleus = region & (np.abs(hn) <= 0.7) & ellipse(a - 0.08 * rae, l, nf * rae, nf * rle)
            values[region] = level_label(e.vertebra, 4)
            values[nucleus & (e.nucleus > 0)] = level_label(e.vertebra, 3)
        else:
            t_up = max(cfg.endplate_mm, 1.05 * _voxel_along(surfaces[k][1][:, 0], spacing))
            t_lo = max(cfg.endplate_mm, 1.05 * _voxel_along(surfaces[k + 1][1][:, 0], spacing))
            endplate = region & ((du < t_up) | (dl <= t_lo))
            tc = cfg.cortex_mm
            core = ellipse(a, l, rae - tc, rle - tc) & ~_notch(a, l, rae, rle, tc) & ~endplate
            core &= ndimage.binary_erosion(region, np.ones((3, 3, 3), bool), border_value=0)
            values[region] = level_label(e.vertebra, 1)
            values[endplate] = level_label(e.vertebra, 2)
            values[core] = level_label(e.vertebra, 0)
            pe[sl] |= _posterior_elements(e, hm, a, l, ped_w, l_p, a1, tp, above, below)
        paint.append((sl, region, values))
    return paint, ligaments, pe


def _posterior_elements(e: Element, hm, a, l, ped_w: float, l_p: float, a1: float, tp: float, above: float,
                        below: float) -> np.ndarray:
    """Pedicles, laminae, articular columns, spinous and transverse processes (body frame, mm)."""
    h, ra, al = e.height, e.depth / 2, np.abs(l)
    pedicle = ((hm + 0.12 * h) / (0.25 * h)) ** 2 + ((al - l_p) / (ped_w / 2)) ** 2 <= 1.0
    pedicle &= (a >= 0.5 * ra) & (a <= a1 + 1.0)
    lamina = (a >= a1) & (a <= a1 + LAMINA_MM) & (al <= l_p + ped_w / 2)
    lamina &= (hm >= -0.35 * h) & (hm <= 0.5 * h + 0.5 * below)
    facets = (np.abs(al - l_p) <= ped_w / 2 + 1.0) & (a >= a1 - 3.0) & (a <= a1 + LAMINA_MM + 3.0)
    facets &= (hm >= -0.5 * h - 0.45 * above) & (hm <= 0.5 * h + 0.3 * below)
    sa = a - a1 - LAMINA_MM
    spinous = (sa >= -1.0) & (sa <= e.spinous) & (al <= 2.5) & (np.abs(hm - 0.1 * h - e.slope * sa) <= 0.28 * h)
    tp_half = 0.3 * h if e.vertebra == 26 else 3.5
    transverse = (al >= l_p) & (al <= l_p + tp) & (np.abs(a - (a1 - 0.4 * e.canal_ap)) <= 4.5)
    transverse &= np.abs(hm + 0.12 * h) <= tp_half
    return pedicle | lamina | facets | spinous | transverse


def layout(cfg: PhantomConfig, rng: np.random.Generator, grid: list[np.ndarray]) -> tuple:
    """Plan and place the column, then shift it antero-posteriorly into the torso (grid mm)."""
    spacing = np.asarray(cfg.spacing)
    els, theta0, phi0 = _plan(cfg, rng)
    bounds, mids = _place(cfg, els, theta0, phi0, rng)
    pr = _profiles(els, bounds, mids, grid[0])
    u = rng.uniform
    fat, torso_ap, torso_lr = u(*cfg.subcutaneous_fat_mm), u(100.0, 130.0), u(140.0, 175.0)
    post = max(e.depth / 2 + GAP_MM + e.canal_ap + LAMINA_MM + e.spinous for e in els if e.kind == "body")
    skin = post + u(5.0, 15.0) + fat  # posterior skin, mm behind the body axis
    half1 = cfg.shape[1] * spacing[1] / 2
    lo = -half1 + 4.0 + float(pr["ra"].max()) - float(pr["yb"].min())
    hi = half1 - float((pr["yb"] + pr["ra"] + GAP_MM + pr["cap"] + 8.0).max())
    dy = half1 - 4.0 - float((pr["yb"] + skin).max())
    dy = min(max(dy, lo), hi) if lo <= hi else (lo + hi) / 2
    pr["yb"], pr["yk"] = pr["yb"] + dy, pr["yk"] + dy
    shift = np.array([0.0, dy, 0.0])
    bounds, mids = [(p + shift, r) for p, r in bounds], [(p + shift, r) for p, r in mids]
    return els, bounds, mids, pr, (fat, torso_ap, torso_lr, skin)
