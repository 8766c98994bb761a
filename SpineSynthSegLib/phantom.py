"""Procedural spine phantoms: seeded lumbar / thoraco-lumbar generation label maps.

The column is built as a stack of rigid wedges (vertebral body, disc, body, ...) from ``top_level``
down to S1: each element has a centre height and a sagittal / lateral wedge angle, so lordosis,
kyphosis, scoliosis and wedge fractures all come from the same stacking (anterior height =
height + depth/2 * tan(wedge)). Neighbouring elements share one boundary surface (a plane with a
slight endplate concavity), so bodies and discs adjoin without gaps or overlaps. Soft tissues
(canal, cord, muscles, fat, viscera) follow the column's centre line slice by slice.

Geometry matches the reference data: array axis 0 runs superior -> inferior, axis 1 anterior ->
posterior, axis 2 across sagittal slices; ``Volume.orientation()`` reads 'IPR'. Label ids:
0 air, 1-11 shared tissues (`GLOBAL_LABELS`), and ``level_label(vertebra, part)`` =
20 + 5 * (vertebra - 1) + part for the per-level parts (marrow, cortex, endplate of a body;
nucleus, annulus of the disc below it), so e.g. L3 marrow is 125 and the L3-L4 nucleus 128.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .io import Volume
from .labels import CRANIOCAUDAL_ORDER, VERTEBRA_IDS, VERTEBRA_NAMES, LabelEntry, LabelTable, disc_label

log = logging.getLogger(__name__)

#: LPS direction cosines (columns): axis 0 -> inferior, axis 1 -> posterior, axis 2 -> right ('IPR').
DIRECTION = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
#: (name, tissue) of the shared labels; the id is the position (0 = air outside the body).
GLOBAL_LABELS: tuple[tuple[str, str], ...] = (
    ("background (air)", "air"), ("subcutaneous fat", "fat"), ("paraspinal muscle", "muscle"),
    ("psoas muscle", "muscle"), ("abdominal viscera", "viscera"), ("retroperitoneal fat", "fat"),
    ("epidural fat", "fat"), ("cerebrospinal fluid", "csf"), ("spinal cord", "cord"),
    ("posterior elements marrow", "marrow"), ("posterior elements cortex", "cortical_bone"),
    ("spinal ligaments", "ligament"),
)
SUBCUT, PARASPINAL, PSOAS, VISCERA, RETRO_FAT, EPIDURAL, CSF, CORD, PE_MARROW, PE_CORTEX, LIGAMENT = range(1, 12)
#: (name, tissue) of the per-level parts: body marrow, cortex, endplate; disc nucleus, annulus.
PARTS = (("marrow", "marrow"), ("cortex", "cortical_bone"), ("endplate", "endplate"), ("nucleus", "nucleus"),
         ("annulus", "annulus"))
SACRUM_BELOW = 27  # level slot of the sacral segment below S1 (no output id: generation only)
_GAP = 3.0  # mm between a body's posterior wall and the canal (posterior longitudinal ligament)
_LAMINA = 5.0  # lamina thickness, mm
_RANGES = {  # field: (lowest allowed low, highest allowed high)
    "body_height_mm": (5.0, 60.0), "disc_height_mm": (1.0, 25.0), "body_width_mm": (10.0, 90.0),
    "body_depth_mm": (10.0, 70.0), "lordosis_deg": (-30.0, 80.0), "scoliosis_deg": (0.0, 60.0),
    "canal_depth_mm": (8.0, 30.0), "canal_width_mm": (10.0, 35.0), "subcutaneous_fat_mm": (0.0, 60.0),
    "wedge_fracture_loss": (0.0, 0.8),
}


def level_label(vertebra: int, part: int) -> int:
    """Generation id of part 0-4 (marrow, cortex, endplate, nucleus, annulus) of a level."""
    return 20 + 5 * (vertebra - 1) + part


def _numbers(name: str, value, n: int, kind: type = float) -> tuple:
    """``value`` as a tuple of ``n`` finite numbers, else ValueError naming the field."""
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be {n} finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class PhantomConfig:
    """Parameters of the phantom generator; ``(low, high)`` pairs are sampled uniformly per phantom.

    Attributes:
        shape: grid size in voxels (array-axis order: S->I, A->P, across sagittal slices).
        spacing: voxel size in mm, array-axis order; anisotropic grids are fine.
        top_level: highest vertebra ('L1'; 'T10' makes a thoraco-lumbar column). The column always
            ends with S1; it is shortened to fit the field of view along axis 0 when needed.
        n_lumbar: 5, or 6 for a sixth lumbar vertebra (L6, id 25).
        t13: add a thirteenth thoracic vertebra (T13, id 28).
        sacrum_below_s1: draw the sacral segment below S1 (generation only, target 0).
        body_height_mm: centre height of an L3-sized body, mm (other levels scale from it).
        disc_height_mm: centre height of the L3-L4 disc, mm.
        body_width_mm: lateral diameter of L3, mm.
        body_depth_mm: antero-posterior diameter of L3, mm.
        lordosis_deg: L1 to S1 lordosis, degrees (distributed mostly over the lower discs).
        scoliosis_deg: lateral (Cobb-like) curvature of the whole column, degrees, random side.
        canal_depth_mm: antero-posterior diameter of the lumbar canal, mm.
        canal_width_mm: lateral diameter of the lumbar canal, mm.
        subcutaneous_fat_mm: thickness of the fat layer under the skin, mm.
        cortex_mm: cortical rim thickness, mm (at least one voxel is always kept).
        endplate_mm: endplate layer thickness, mm (at least one voxel along the column axis).
        wedge_fracture_prob: probability that one random body has an anterior wedge fracture.
        wedge_fracture_loss: anterior height loss of a fractured body, fraction (0.2 = 20 %).
        disc_degeneration_prob: probability, per disc, of degeneration (height x 0.45-0.7,
            nucleus halved or absent, more bulge).
        level_jitter: relative random variation of each level's size.
    """

    shape: tuple[int, int, int] = (144, 112, 64)
    spacing: tuple[float, float, float] = (1.5, 1.5, 1.5)
    top_level: str = "L1"
    n_lumbar: int = 5
    t13: bool = False
    sacrum_below_s1: bool = True
    body_height_mm: tuple[float, float] = (23.0, 29.0)
    disc_height_mm: tuple[float, float] = (7.0, 11.0)
    body_width_mm: tuple[float, float] = (40.0, 50.0)
    body_depth_mm: tuple[float, float] = (29.0, 36.0)
    lordosis_deg: tuple[float, float] = (25.0, 55.0)
    scoliosis_deg: tuple[float, float] = (0.0, 12.0)
    canal_depth_mm: tuple[float, float] = (14.0, 18.0)
    canal_width_mm: tuple[float, float] = (18.0, 24.0)
    subcutaneous_fat_mm: tuple[float, float] = (6.0, 30.0)
    cortex_mm: float = 1.2
    endplate_mm: float = 1.0
    wedge_fracture_prob: float = 0.1
    wedge_fracture_loss: tuple[float, float] = (0.2, 0.5)
    disc_degeneration_prob: float = 0.15
    level_jitter: float = 0.05

    def __post_init__(self) -> None:
        shape, spacing = _numbers("shape", self.shape, 3, int), _numbers("spacing", self.spacing, 3)
        if min(shape) < 16:
            raise ValueError(f"shape must be three sizes >= 16 voxels, got {self.shape!r}")
        if not all(0 < s <= 8 for s in spacing):
            raise ValueError(f"spacing must be three voxel sizes in (0, 8] mm, got {self.spacing!r}")
        if shape[1] * spacing[1] < 80 or shape[2] * spacing[2] < 40:
            raise ValueError(f"shape x spacing must span >= 80 mm on axis 1 and >= 40 mm on axis 2, got {self.shape!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        for name, (lowest, highest) in _RANGES.items():
            lo, hi = _numbers(name, getattr(self, name), 2)
            if not lowest <= lo <= hi <= highest:
                raise ValueError(f"{name} must satisfy {lowest} <= low <= high <= {highest}, got {(lo, hi)!r}")
            object.__setattr__(self, name, (lo, hi))
        limits = {"wedge_fracture_prob": 1.0, "disc_degeneration_prob": 1.0, "cortex_mm": 5.0, "endplate_mm": 5.0,
                  "level_jitter": 0.3}
        for name, highest in limits.items():
            if not 0.0 <= getattr(self, name) <= highest:
                raise ValueError(f"{name} must be in [0, {highest}], got {getattr(self, name)!r}")
        if self.n_lumbar not in (5, 6):
            raise ValueError(f"n_lumbar must be 5 or 6, got {self.n_lumbar!r}")
        order = self._order()
        top = VERTEBRA_IDS.get(str(self.top_level).upper())
        if top not in order[:-1]:
            names = [VERTEBRA_NAMES[v] for v in order[:-1]]
            raise ValueError(f"top_level must be one of {names[0]}..{names[-1]}, got {self.top_level!r}")

    def _order(self) -> list[int]:
        return [v for v in CRANIOCAUDAL_ORDER if v >= 8 and (v != 28 or self.t13) and (v != 25 or self.n_lumbar == 6)]

    def levels(self) -> list[int]:
        """Vertebra ids of the column, superior to inferior (ends with S1 = 26)."""
        order = self._order()
        return order[order.index(VERTEBRA_IDS[self.top_level.upper()]):]


@dataclass
class _Element:
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


def _plan(cfg: PhantomConfig, rng: np.random.Generator) -> tuple[list[_Element], float, float]:
    """Sample the elements (bodies, discs) and the initial tilt of the column."""
    u = rng.uniform
    h_body, h_disc = u(*cfg.body_height_mm), u(*cfg.disc_height_mm)
    depth, width = u(*cfg.body_depth_mm), u(*cfg.body_width_mm)
    cap, cw, sp_len = u(*cfg.canal_depth_mm), u(*cfg.canal_width_mm), u(24.0, 32.0)
    levels = cfg.levels()
    els: list[_Element] = []
    for i, v in enumerate(levels):
        f, dist = _size_factor(v), len(levels) - 1 - i
        thor = v < 20 or v == 28
        j = 1.0 + u(-cfg.level_jitter, cfg.level_jitter, size=4)
        hf = 1.05 if v == 26 else 1 - 0.6 * (1 - f)
        wf = 1.1 if v == 26 else 1.0
        els.append(_Element("body", v, h_body * hf * j[0], depth * f * j[1], width * f * wf * j[2], v, dist,
                            canal_ap=cap * (0.95 if thor else 1.0), canal_w=cw * (0.8 if thor else 1.0),
                            spinous=sp_len * f * (0.35 if v == 26 else 1.0), slope=0.9 if thor else 0.2))
        if v != 26:
            df = 0.65 if thor else {1: 0.95, 2: 1.05, 3: 1.0, 4: 0.92}.get(dist, 0.85)
            els.append(_Element("disc", v, h_disc * df * j[3], target=disc_label(v), dist=dist, nucleus=u(0.45, 0.6)))
    if cfg.sacrum_below_s1:
        els.append(_Element("disc", 26, 2.5, nucleus=0.0))
        els.append(_Element("body", SACRUM_BELOW, h_body * 0.8, depth * 0.85, width * 0.85, canal_ap=cap * 0.7,
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


def _build(els: list[_Element], theta0: float, phi0: float, spacing: np.ndarray) -> tuple[list, list]:
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


def _rim(bound: tuple, e: _Element) -> np.ndarray:
    p, r = bound
    return np.array([p + sa * e.depth / 2 * r[:, 1] + sl * e.width / 2 * r[:, 2] for sa in (-1, 1) for sl in (-1, 1)])


def _place(cfg: PhantomConfig, els: list[_Element], theta0: float, phi0: float, rng: np.random.Generator) -> tuple:
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


def _profiles(els: list[_Element], bounds: list, mids: list, z: np.ndarray) -> dict[str, np.ndarray]:
    """Per axis-0 slice: body axis (yb, xb), radii, canal centre (yk, xk) and in-slice canal size."""
    rows = []
    for e, (pu, _), (pl, _), (_, rm) in zip(els, bounds[:-1], bounds[1:], mids):
        for t in (0.1, 0.5, 0.9):
            p = pu + t * (pl - pu)
            k = p + (e.depth / 2 + _GAP + e.canal_ap / 2) * rm[:, 1]
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


def _ell(a: np.ndarray, l: np.ndarray, ra, rl) -> np.ndarray:
    return (a / ra) ** 2 + (l / rl) ** 2 <= 1.0


def _notch(a: np.ndarray, l: np.ndarray, ra, rl, grow: float = 0.0) -> np.ndarray:
    """Posterior concavity of the kidney-shaped cross-section."""
    return ((a - 1.02 * ra) / (0.22 * ra + grow)) ** 2 + (l / (0.32 * rl + grow)) ** 2 < 1.0


def _draw_column(cfg: PhantomConfig, els: list[_Element], bounds: list, mids: list, grid: list[np.ndarray]) -> tuple:
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
        a1 = ra + _GAP + e.canal_ap
        if e.kind == "body":
            h_ext = max(e.height / 2 + below, 0.38 * e.height + e.slope * e.spinous) + 2.0
            a_ext = a1 + _LAMINA + e.spinous + 2
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
        inside = _ell(a, l, rae, rle) & ~_notch(a, l, rae, rle)
        region = between & inside
        ligaments.append((sl, between & _ell(a, l, rae + _GAP, rle + _GAP) & (np.abs(l) < 0.45 * rle) & ~inside))
        values = np.zeros(region.shape, np.int32)
        if e.kind == "disc":
            nf = e.nucleus + 1e-6
            nucleus = region & (np.abs(hn) <= 0.7) & _ell(a - 0.08 * rae, l, nf * rae, nf * rle)
            values[region] = level_label(e.vertebra, 4)
            values[nucleus & (e.nucleus > 0)] = level_label(e.vertebra, 3)
        else:
            t_up = max(cfg.endplate_mm, 1.05 * _voxel_along(surfaces[k][1][:, 0], spacing))
            t_lo = max(cfg.endplate_mm, 1.05 * _voxel_along(surfaces[k + 1][1][:, 0], spacing))
            endplate = region & ((du < t_up) | (dl <= t_lo))
            tc = cfg.cortex_mm
            core = _ell(a, l, rae - tc, rle - tc) & ~_notch(a, l, rae, rle, tc) & ~endplate
            core &= ndimage.binary_erosion(region, np.ones((3, 3, 3), bool), border_value=0)
            values[region] = level_label(e.vertebra, 1)
            values[endplate] = level_label(e.vertebra, 2)
            values[core] = level_label(e.vertebra, 0)
            pe[sl] |= _posterior_elements(e, hm, a, l, ped_w, l_p, a1, tp, above, below)
        paint.append((sl, region, values))
    return paint, ligaments, pe


def _posterior_elements(e: _Element, hm, a, l, ped_w: float, l_p: float, a1: float, tp: float, above: float,
                        below: float) -> np.ndarray:
    """Pedicles, laminae, articular columns, spinous and transverse processes (body frame, mm)."""
    h, ra, al = e.height, e.depth / 2, np.abs(l)
    pedicle = ((hm + 0.12 * h) / (0.25 * h)) ** 2 + ((al - l_p) / (ped_w / 2)) ** 2 <= 1.0
    pedicle &= (a >= 0.5 * ra) & (a <= a1 + 1.0)
    lamina = (a >= a1) & (a <= a1 + _LAMINA) & (al <= l_p + ped_w / 2)
    lamina &= (hm >= -0.35 * h) & (hm <= 0.5 * h + 0.5 * below)
    facets = (np.abs(al - l_p) <= ped_w / 2 + 1.0) & (a >= a1 - 3.0) & (a <= a1 + _LAMINA + 3.0)
    facets &= (hm >= -0.5 * h - 0.45 * above) & (hm <= 0.5 * h + 0.3 * below)
    sa = a - a1 - _LAMINA
    spinous = (sa >= -1.0) & (sa <= e.spinous) & (al <= 2.5) & (np.abs(hm - 0.1 * h - e.slope * sa) <= 0.28 * h)
    tp_half = 0.3 * h if e.vertebra == 26 else 3.5
    transverse = (al >= l_p) & (al <= l_p + tp) & (np.abs(a - (a1 - 0.4 * e.canal_ap)) <= 4.5)
    transverse &= np.abs(hm + 0.12 * h) <= tp_half
    return pedicle | lamina | facets | spinous | transverse


def _layout(cfg: PhantomConfig, rng: np.random.Generator, grid: list[np.ndarray]) -> tuple:
    """Plan and place the column, then shift it antero-posteriorly into the torso (grid mm)."""
    spacing = np.asarray(cfg.spacing)
    els, theta0, phi0 = _plan(cfg, rng)
    bounds, mids = _place(cfg, els, theta0, phi0, rng)
    pr = _profiles(els, bounds, mids, grid[0])
    u = rng.uniform
    fat, torso_ap, torso_lr = u(*cfg.subcutaneous_fat_mm), u(100.0, 130.0), u(140.0, 175.0)
    post = max(e.depth / 2 + _GAP + e.canal_ap + _LAMINA + e.spinous for e in els if e.kind == "body")
    skin = post + u(5.0, 15.0) + fat  # posterior skin, mm behind the body axis
    half1 = cfg.shape[1] * spacing[1] / 2
    lo = -half1 + 4.0 + float(pr["ra"].max()) - float(pr["yb"].min())
    hi = half1 - float((pr["yb"] + pr["ra"] + _GAP + pr["cap"] + 8.0).max())
    dy = half1 - 4.0 - float((pr["yb"] + skin).max())
    dy = min(max(dy, lo), hi) if lo <= hi else (lo + hi) / 2
    pr["yb"], pr["yk"] = pr["yb"] + dy, pr["yk"] + dy
    shift = np.array([0.0, dy, 0.0])
    bounds, mids = [(p + shift, r) for p, r in bounds], [(p + shift, r) for p, r in mids]
    return els, bounds, mids, pr, (fat, torso_ap, torso_lr, skin)


def generate_phantom(config: PhantomConfig = PhantomConfig(), seed: int = 0) -> tuple[Volume, LabelTable]:
    """Generate a seeded spine phantom label map and the table describing its labels.

    Args:
        config: geometry and anatomy ranges.
        seed: seed of the `numpy.random.Generator` that draws every anatomical parameter; the
            same seed gives an identical array.

    Returns:
        ``(volume, table)``: an int32 generation label map (orientation 'IPR', centred on world 0)
        and its `LabelTable` (every id present in the map, tissues and output targets).

    Raises:
        ValueError: the field of view along axis 0 cannot hold the levels even when shortened.
    """
    cfg = config
    rng = np.random.default_rng(seed)
    spacing = np.asarray(cfg.spacing)
    grid = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(cfg.shape, spacing)]
    els, bounds, mids, pr, (fat, torso_ap, torso_lr, skin) = _layout(cfg, rng, grid)
    u = rng.uniform

    z, y, x = grid[0][:, None, None], grid[1][None, :, None], grid[2][None, None, :]
    yb, xb, yk, xk, ra, rl, cap, cw = (pr[k] for k in ("yb", "xb", "yk", "xk", "ra", "rl", "cap", "cw"))
    lab = np.zeros(cfg.shape, np.int32)
    yt = yb + skin - torso_ap
    lab[_ell(y - yt, x, torso_ap, torso_lr)] = SUBCUT
    inner = _ell(y - yt, x, torso_ap - fat, torso_lr - fat)
    lab[inner] = RETRO_FAT
    lab[inner & (y < yb - ra - u(4.0, 12.0))] = VISCERA
    lab[inner & (y > yk - cap / 2) & (np.abs(x - xb) < u(50.0, 75.0))] = PARASPINAL
    body_z = {e.vertebra: m[0][0] for e, m in zip(els, mids) if e.kind == "body"}
    z0 = body_z[19] if 19 in body_z else min(body_z.values()) - 25.0
    z_full = body_z.get(23, z0 + 60.0)
    grow = np.clip((z - z0) / max(z_full - z0, 1.0), 0.0, 1.0) ** 0.7
    ps_ap, ps_lr = u(14.0, 20.0) * grow + 1e-3, u(16.0, 24.0) * grow + 1e-3
    for side in (-1.0, 1.0):
        lab[inner & _ell(y - yb - 0.1 * ra, x - xb - side * (rl + 0.8 * ps_lr + 2.0), ps_ap, ps_lr)] = PSOAS
    tip = max(_LAMINA + e.spinous for e in els if e.kind == "body") + 3.0
    lab[inner & (y > yk + cap / 2) & (y < yk + cap / 2 + tip) & (np.abs(x - xk) < 1.5)] = LIGAMENT  # interspinous

    paint, ligaments, pe = _draw_column(cfg, els, bounds, mids, grid)
    lab[pe] = PE_CORTEX
    lab[ndimage.binary_erosion(pe, np.ones((3, 3, 3), bool))] = PE_MARROW
    for sl, mask in ligaments:
        lab[sl][mask] = LIGAMENT
    lab[_ell(y - yk, x - xk, cap / 2, cw / 2)] = EPIDURAL
    dural = _ell(y - yk + 0.5, x - xk, np.maximum(cap / 2 - 1.5, 1.0), np.maximum(cw / 2 - 1.5, 1.0))
    z_conus = np.inf if 20 not in body_z else body_z[20] + u(0.0, 1.0) * (body_z[21] - body_z[20])
    taper = np.sqrt(np.clip((z_conus - z) / 15.0, 0.0, 1.0))
    cord = _ell(y - yk + 0.5, x - xk, u(3.25, 4.25) * taper * pr["stretch"] + 1e-6, u(4.25, 5.5) * taper + 1e-6)
    cord &= (z < z_conus) & (taper > 0.05) & dural
    lab[dural | ndimage.binary_dilation(cord, np.ones((3, 3, 3), bool))] = CSF
    lab[cord] = CORD
    for sl, region, values in paint:
        lab[sl][region] = values[region]

    origin = -DIRECTION @ ((np.asarray(cfg.shape) - 1) / 2 * spacing)  # world 0 at the grid centre
    vol = Volume(lab, tuple(spacing), tuple(origin), DIRECTION.copy())
    return vol, _table(els, lab)


def _table(els: list[_Element], lab: np.ndarray) -> LabelTable:
    entries = [LabelEntry(i, name, tissue) for i, (name, tissue) in enumerate(GLOBAL_LABELS)]
    for k, e in enumerate(els):
        if e.kind == "body":
            name = VERTEBRA_NAMES.get(e.vertebra, "S2 (sacrum)")
            parts = range(3)
        else:
            lower = els[k + 1].vertebra
            name = f"{VERTEBRA_NAMES[e.vertebra]}-{VERTEBRA_NAMES.get(lower, 'S2')}{'' if e.target else ' remnant'}"
            parts = range(3, 5)
        for part in parts:
            entries.append(LabelEntry(level_label(e.vertebra, part), f"{name} {PARTS[part][0]}", PARTS[part][1], e.target))
    present = set(np.flatnonzero(np.bincount(lab.ravel(), minlength=1)).tolist())
    parts = {"body": range(3), "disc": range(3, 5)}
    missing = [e.target for e in els if e.target and not any(level_label(e.vertebra, p) in present for p in parts[e.kind])]
    if missing:
        raise ValueError(f"shape/spacing: the grid is too coarse or small to hold the levels {missing}")
    return LabelTable(tuple(en for en in entries if en.id in present))


def phantom_targets(vol: Volume, table: LabelTable) -> Volume:
    """The output (target) label map of a phantom: vertebra ids, disc ids 100 + upper vertebra, 0."""
    return vol.with_array(table.target_map(vol.array))
