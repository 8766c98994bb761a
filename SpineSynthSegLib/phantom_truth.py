"""Ground-truth geometry of the procedural phantom's bodies and discs (for validating measurements).

`phantom_levels` replays the random draws of `phantom.generate_phantom` for the same config and
seed and returns each element's boundary surfaces, so heights, wedges and fractures measured on the
label map can be checked against the generator's own numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .phantom import DIRECTION, PhantomConfig
from .phantom_column import layout


@dataclass(frozen=True)
class PhantomLevel:
    """Ground-truth geometry of one vertebral body or disc of a phantom (world LPS, mm).

    The element fills the space between two boundary surfaces. Each surface is a plane through
    ``point`` with unit normal ``axis`` (pointing inferior), displaced along ``axis`` by an
    endplate concavity ``dome * (1 - min(r2, 1))``, where ``r2 = (a / ra)^2 + (l / rl)^2`` in the
    surface's own antero-posterior / lateral coordinates (``ap_axis``, ``lr_axis``).

    Attributes:
        kind: 'body' or 'disc'.
        label: output id (vertebra id, or disc id 100 + vertebra above; 0: generation only).
        vertebra: vertebra id of the body, or of the vertebra above the disc.
        height_mm: centre height along the column axis before the endplate concavities, mm.
        depth_mm: antero-posterior diameter, mm; width_mm: lateral diameter, mm.
        wedge_deg: sagittal wedge angle (positive: anterior taller), degrees.
        fracture_loss: anterior height loss of a simulated wedge fracture (fraction), else 0.
        centre: world (LPS) position of the element's mid point, mm.
        axes: 3x3, columns: the element's mid-frame inferior, posterior and lateral unit vectors (LPS).
        surfaces: ``(top, bottom)``, each a dict with point, axis, ap_axis, lr_axis (LPS), dome,
            ra, rl (mm).
    """

    kind: str
    label: int
    vertebra: int
    height_mm: float
    depth_mm: float
    width_mm: float
    wedge_deg: float
    fracture_loss: float
    centre: np.ndarray
    axes: np.ndarray
    surfaces: tuple[dict, dict]

    def surface_value(self, points: np.ndarray, which: int) -> np.ndarray:
        """Signed distance-like value of ``points`` (..., 3, LPS mm) to surface 0 (top) or 1 (bottom).

        Positive below the surface (towards inferior), zero on it.
        """
        s = self.surfaces[which]
        d = np.asarray(points, float) - s["point"]
        h, a, lat = d @ s["axis"], d @ s["ap_axis"], d @ s["lr_axis"]
        r2 = np.minimum((a / s["ra"]) ** 2 + (lat / s["rl"]) ** 2, 1.0)
        return h - s["dome"] * (1.0 - r2)

    def thickness_along(self, point: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the line through ``point`` along ``direction`` meets the top and bottom surfaces.

        Returns:
            ``(top, bottom)`` world (LPS) points, mm; the element's true height along that line
            is their distance (ignores the lateral and antero-posterior walls).
        """
        point, direction = np.asarray(point, float), np.asarray(direction, float)
        direction = direction / np.linalg.norm(direction)
        out = []
        for which in (0, 1):
            lo, hi = -2.0 * self.height_mm - 20.0, 2.0 * self.height_mm + 20.0
            sign_lo = self.surface_value(point + lo * direction, which) > 0
            for _ in range(60):  # bisection: the value is monotonic along a near-axial line
                mid = (lo + hi) / 2
                if (self.surface_value(point + mid * direction, which) > 0) == sign_lo:
                    lo = mid
                else:
                    hi = mid
            out.append(point + (lo + hi) / 2 * direction)
        return out[0], out[1]


def phantom_levels(config: PhantomConfig | None = None, seed: int = 0) -> list[PhantomLevel]:
    """The ground-truth geometry of every body and disc of ``generate_phantom(config, seed)``.

    Replays the same random draws as `generate_phantom` (same seed, same column) without drawing
    the label map, for validating measurements (heights, wedges, fractures) against the generator.
    """
    cfg = config or PhantomConfig()
    rng = np.random.default_rng(seed)
    grid = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(cfg.shape, np.asarray(cfg.spacing))]
    els, bounds, mids, _, _ = layout(cfg, rng, grid)
    surfaces = []
    for j, (p, r) in enumerate(bounds):  # as in _draw_column
        body = els[j] if j < len(els) and els[j].kind == "body" else els[j - 1]
        dome = 0.0 if j in (0, len(els)) else (0.045 if els[j].kind == "body" else -0.045) * body.depth
        surfaces.append({"point": DIRECTION @ p, "axis": DIRECTION @ r[:, 0], "ap_axis": DIRECTION @ r[:, 1],
                         "lr_axis": DIRECTION @ r[:, 2], "dome": dome, "ra": body.depth / 2, "rl": body.width / 2})
    levels = []
    for k, e in enumerate(els):
        pm, rm = mids[k]
        levels.append(PhantomLevel(e.kind, e.target, e.vertebra, e.height, e.depth, e.width, math.degrees(e.alpha),
                                   e.fracture, DIRECTION @ pm, DIRECTION @ rm, (surfaces[k], surfaces[k + 1])))
    return levels
