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

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .io import Volume
from .labels import CRANIOCAUDAL_ORDER, VERTEBRA_IDS, VERTEBRA_NAMES, LabelEntry, LabelTable
from .phantom_column import LAMINA_MM, Element, draw_column, ellipse, layout, level_label

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
_RANGES = {  # field: (lowest allowed low, highest allowed high)
    "body_height_mm": (5.0, 60.0), "disc_height_mm": (1.0, 25.0), "body_width_mm": (10.0, 90.0),
    "body_depth_mm": (10.0, 70.0), "lordosis_deg": (-30.0, 80.0), "scoliosis_deg": (0.0, 60.0),
    "canal_depth_mm": (8.0, 30.0), "canal_width_mm": (10.0, 35.0), "subcutaneous_fat_mm": (0.0, 60.0),
    "wedge_fracture_loss": (0.0, 0.8),
}


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
    els, bounds, mids, pr, (fat, torso_ap, torso_lr, skin) = layout(cfg, rng, grid)
    u = rng.uniform

    z, y, x = grid[0][:, None, None], grid[1][None, :, None], grid[2][None, None, :]
    yb, xb, yk, xk, ra, rl, cap, cw = (pr[k] for k in ("yb", "xb", "yk", "xk", "ra", "rl", "cap", "cw"))
    lab = np.zeros(cfg.shape, np.int32)
    yt = yb + skin - torso_ap
    lab[ellipse(y - yt, x, torso_ap, torso_lr)] = SUBCUT
    inner = ellipse(y - yt, x, torso_ap - fat, torso_lr - fat)
    lab[inner] = RETRO_FAT
    lab[inner & (y < yb - ra - u(4.0, 12.0))] = VISCERA
    lab[inner & (y > yk - cap / 2) & (np.abs(x - xb) < u(50.0, 75.0))] = PARASPINAL
    body_z = {e.vertebra: m[0][0] for e, m in zip(els, mids) if e.kind == "body"}
    z0 = body_z[19] if 19 in body_z else min(body_z.values()) - 25.0
    z_full = body_z.get(23, z0 + 60.0)
    grow = np.clip((z - z0) / max(z_full - z0, 1.0), 0.0, 1.0) ** 0.7
    ps_ap, ps_lr = u(14.0, 20.0) * grow + 1e-3, u(16.0, 24.0) * grow + 1e-3
    for side in (-1.0, 1.0):
        lab[inner & ellipse(y - yb - 0.1 * ra, x - xb - side * (rl + 0.8 * ps_lr + 2.0), ps_ap, ps_lr)] = PSOAS
    tip = max(LAMINA_MM + e.spinous for e in els if e.kind == "body") + 3.0
    lab[inner & (y > yk + cap / 2) & (y < yk + cap / 2 + tip) & (np.abs(x - xk) < 1.5)] = LIGAMENT  # interspinous

    paint, ligaments, pe = draw_column(cfg, els, bounds, mids, grid)
    lab[pe] = PE_CORTEX
    lab[ndimage.binary_erosion(pe, np.ones((3, 3, 3), bool))] = PE_MARROW
    for sl, mask in ligaments:
        lab[sl][mask] = LIGAMENT
    lab[ellipse(y - yk, x - xk, cap / 2, cw / 2)] = EPIDURAL
    dural = ellipse(y - yk + 0.5, x - xk, np.maximum(cap / 2 - 1.5, 1.0), np.maximum(cw / 2 - 1.5, 1.0))
    z_conus = np.inf if 20 not in body_z else body_z[20] + u(0.0, 1.0) * (body_z[21] - body_z[20])
    taper = np.sqrt(np.clip((z_conus - z) / 15.0, 0.0, 1.0))
    cord = ellipse(y - yk + 0.5, x - xk, u(3.25, 4.25) * taper * pr["stretch"] + 1e-6, u(4.25, 5.5) * taper + 1e-6)
    cord &= (z < z_conus) & (taper > 0.05) & dural
    lab[dural | ndimage.binary_dilation(cord, np.ones((3, 3, 3), bool))] = CSF
    lab[cord] = CORD
    for sl, region, values in paint:
        lab[sl][region] = values[region]

    origin = -DIRECTION @ ((np.asarray(cfg.shape) - 1) / 2 * spacing)  # world 0 at the grid centre
    vol = Volume(lab, tuple(spacing), tuple(origin), DIRECTION.copy())
    return vol, _table(els, lab)


def _table(els: list[Element], lab: np.ndarray) -> LabelTable:
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
