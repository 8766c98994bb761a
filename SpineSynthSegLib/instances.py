"""Instances and levels from a semantic spine map (1 vertebral body, 2 disc).

After SPINEPS (Moeller et al. 2024, seed 001): instances come from the semantic map, and every
disc takes the id of the nearest vertebra above it. Steps of `assign_levels` (RAS grid, world mm):

1. Bodies: 6-connected components of class 1 (under ``min_body_mm3`` dropped). Merged bodies are
   separated (`body_split`): through a thin bridge (cores deeper than ``split_radius_mm``, grown
   back by a watershed; a body whose centre is thinner than twice that radius, a severe fracture,
   would be split too), and around a partly segmented disc that lies inside one component at least
   1.5 x the median body (cut along the disc's mid-plane).
2. Order: projection of the body centroids on their principal axis (PCA, oriented superior); for a
   lumbar lordosis this is the order along the curve. A step between consecutive bodies longer than
   1.6 x the median step counts as round(step / median) - 1 missed levels (ids skip them).
3. Discs: components of class 2 (under ``min_disc_mm3`` dropped), each put on the nearest segment
   of the centroid chain (extended by 0.6 step above the top and below the lowest body); disc id
   = 100 + id of the body above (below the lowest body: 100 + its id).
4. Naming, rules in order for ``anchor='auto'``:
   - ``sacrum``: the lowest body is S1 when its score reaches ``sacrum_threshold`` and no disc is
     segmented below it. Score = weighted features (`SACRUM_WEIGHTS`): no disc below although the
     image continues (0.4), a disc above (0.2), not cut by the inferior border (0.1), tilt of its
     axis to the other bodies' mean (0.1, ramp 30-50 deg) and size (0.2: depth ratio ramp
     1.0-1.25, volume ratio 1.1-1.6, or a fragment: volume ratio 0.75-0.45, since networks often
     segment only part of S1). A disc under 12 % of the median disc volume below the lowest body is
     the S1-S2 remnant and does not count as a disc below it (nor for the ``l5`` rule); smaller
     bodies further below (lower sacral segments) join S1. Measured on real outputs: MODEL_CARD.md.
     The semantic evidence alone scores 0.7; a map without
     discs (neutral 0.5 for both disc features) needs a large, tilted body. On the reference label
     maps the tilt is a weak cue (L5 is often 30-45 deg off the L1-L4 mean), hence its low weight.
     Bodies above S1: L5, L4, ... L1, T12 ... An L6 (25) is only used with ``n_lumbar=6``: a
     semantic map shows no ribs, so six mobile bodies are read as T12-L5. Instead a warning
     'possible transitional anatomy (L6 / sacralisation)' is issued when the lowest mobile disc is
     thin (< ``thin_disc_ratio`` x median disc volume) or missing, when the S1 score is below 0.7,
     or when the segmented column ends inside the field of view with 4 or 6 (n_lumbar -/+ 1)
     mobile bodies above S1.
   - ``l5``: the lowest body is L5 when a disc lies below it, nothing below that disc, and the image
     continues below it (S1 in view but not segmented); in a map without any disc, when the lowest
     body is complete, not sacrum-like, with room below it (labels that stop at L5).
   - ``top``: otherwise the top body is ``top_name`` (default L1), counted downwards (never past
     L5: the count is shifted up then, unless it reaches S1 and no disc is segmented below the
     lowest body, which is then S1); confidence 0.3 and 'may be off by one'.
   ``confidence`` (in [0, 1]) starts at 0.5 + 0.5 x score (sacrum), 0.65 / 0.5 (l5 by disc / without
   discs) or 0.3 (top), times 0.7 per gap, 0.8 / 0.85 per transitional warning, 0.75 for 3 bodies
   and 0.5 for fewer. A gap right above the S1 anchor also halves it, with a warning: a missed L5
   and a missed S1 (a lower sacral body then read as S1, every level one too high) look the same.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .body_split import split_at_discs, split_bridged
from .column_geometry import Column, Part, ap_depth, column_axis, disc_slot, measure_parts, off_chain_mm, ramp
from .io import Volume, reorient
from .labels import CRANIOCAUDAL_ORDER, DISC_OFFSET, VERTEBRA_IDS, vertebra_name

log = logging.getLogger(__name__)

ANCHORS = ("auto", "sacrum", "l5", "top")
SACRUM_WEIGHTS = {"no_disc_below": 0.4, "disc_above": 0.2, "complete": 0.1, "tilt": 0.1, "size": 0.2}
TRANSITIONAL = "possible transitional anatomy (L6 / sacralisation)"


@dataclass(frozen=True)
class InstanceConfig:
    """Thresholds of `assign_levels` (mm, mm^3, degrees).

    Attributes:
        min_body_mm3: smaller body components are dropped, mm^3.
        min_disc_mm3: smaller disc components are dropped, mm^3.
        split_radius_mm: erosion radius that cuts thin bridges between bodies, mm.
        sacrum_threshold: sacrum score from which the lowest body is S1 (the semantic evidence
            alone, a complete lowest body with a disc above and none below, scores 0.7; a map
            without discs needs a large, tilted lowest body).
        tilt_deg: (no, full) tilt of the S1 candidate to the other bodies, degrees.
        depth_ratio: (no, full) antero-posterior depth ratio of the S1 candidate to the others.
        volume_ratio: (no, full) volume ratio of the S1 candidate to the others' median.
        fragment_ratio: (full, no) volume ratio below which the lowest body counts as a fragment of
            S1 (networks often segment only part of the sacrum's first body).
        remnant_disc_ratio: a disc below the lowest body smaller than this fraction of the median
            disc volume is the S1-S2 remnant, not the L5-S1 disc.
        thin_disc_ratio: a lowest mobile disc below this fraction of the median disc volume is
            "thin" (transitional-anatomy warning).
    """

    min_body_mm3: float = 300.0
    min_disc_mm3: float = 50.0
    split_radius_mm: float = 3.0
    sacrum_threshold: float = 0.6
    tilt_deg: tuple[float, float] = (30.0, 50.0)
    depth_ratio: tuple[float, float] = (1.0, 1.25)
    volume_ratio: tuple[float, float] = (1.1, 1.6)
    fragment_ratio: tuple[float, float] = (0.45, 0.75)
    remnant_disc_ratio: float = 0.12
    thin_disc_ratio: float = 0.4

    def __post_init__(self) -> None:
        for name in ("min_body_mm3", "min_disc_mm3", "split_radius_mm", "remnant_disc_ratio"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.sacrum_threshold <= 1.0:
            raise ValueError(f"sacrum_threshold must be in (0, 1], got {self.sacrum_threshold!r}")
        for name in ("tilt_deg", "depth_ratio", "volume_ratio", "fragment_ratio"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be an increasing (low, high) pair, got {getattr(self, name)!r}")


def _check_semantic(semantic: Volume) -> np.ndarray:
    if not isinstance(semantic, Volume):
        raise TypeError(f"semantic must be a Volume, got {type(semantic).__name__}")
    data = semantic.array
    if data.dtype.kind not in "biuf":
        raise ValueError(f"semantic map must hold integer labels, got dtype {data.dtype}")
    bad = [v.item() for v in np.unique(data) if v not in (0, 1, 2)]
    if bad:
        raise ValueError(f"semantic map holds labels {bad[:10]}; expected only 0 (background), 1 (vertebral body), 2 (disc)")
    return data.astype(np.uint8)


def _substantial(items: list[tuple[Part, float]], remnant_mm3: float) -> list:
    """The discs of a chain slot that are not S1-S2 remnants (smaller than ``remnant_mm3``)."""
    return [(d, t) for d, t in items if d.volume_mm3 >= remnant_mm3]


def _split_sacral(col: Column, cfg: InstanceConfig) -> list[Part]:
    """Take off the bodies below the first one under the lowest full-size disc (S2, S3...).

    Below the L5-S1 disc only sacral segments follow, separated by remnant discs at most; the
    first is S1 and the ones below it join it (the convention has one sacrum id). Only pieces
    smaller than a lumbar body are taken: a full-size body there rather means a missed disc.
    """
    full = [i for i, items in col.slots.items() if i >= 0 and _substantial(items, col.remnant_mm3)]
    s1 = max(full, default=len(col.bodies)) + 1
    if s1 >= len(col.bodies) - 1:
        return []
    median = float(np.median([b.volume_mm3 for b in col.bodies[:s1]]))
    if any(b.volume_mm3 >= cfg.fragment_ratio[1] * median for b in col.bodies[s1 + 1:]):
        return []
    extra, col.bodies, col.gaps = col.bodies[s1 + 1:], col.bodies[: s1 + 1], col.gaps[:s1]
    for i in [k for k in col.slots if k > s1]:
        col.slots.setdefault(s1, []).extend(col.slots.pop(i))
    return extra


def _sacrum_score(bodies: list[Part], slots: dict[int, list], remnant_mm3: float, has_discs: bool,
                  room_below: bool, cfg: InstanceConfig) -> tuple[float, dict[str, float]]:
    """Score in [0, 1] that the lowest body is S1, and its features (see `SACRUM_WEIGHTS`).

    Features are in [0, 1]; 0.5 means "cannot tell" (no disc segmented anywhere, no room below
    the body for a disc to be seen, a single body). ``size`` is the larger of the depth and the
    volume ramps.
    """
    low, n = bodies[-1], len(bodies)
    f = {"no_disc_below": 0.5, "disc_above": 0.5, "complete": 0.0 if low.cut_lo else 1.0, "tilt": 0.5, "size": 0.5}
    if has_discs:
        below = slots.get(n - 1, [])
        real_below = _substantial(below, remnant_mm3)
        # only a remnant below: the S1-S2 junction, evidence for S1 even when the image ends there
        f["no_disc_below"] = 0.0 if real_below else (1.0 if below or (room_below and not low.cut_lo) else 0.5)
        f["disc_above"] = 1.0 if (n >= 2 and slots.get(n - 2)) else 0.0
    others = [b for b in bodies[:-1] if not (b.cut_lo or b.cut_hi)] or bodies[:-1]
    if others:
        ref = np.sum([b.axes[:, 0] for b in others], axis=0)
        ref = ref / (np.linalg.norm(ref) or 1.0)
        # the sacrum's cranio-caudal and antero-posterior extents are similar: take the principal
        # axis closest to the others' cranio-caudal axis (so tilts are measured up to 45 degrees)
        axis = low.axes[:, int(np.argmax(np.abs(ref @ low.axes)))]
        tilt = math.degrees(math.acos(min(1.0, abs(float(axis @ ref)))))
        ratio = ap_depth(low, axis) / max(float(np.median([ap_depth(b, b.axes[:, 0]) for b in others])), 1e-6)
        vratio = low.volume_mm3 / float(np.median([b.volume_mm3 for b in others]))
        f["tilt"] = ramp(tilt, *cfg.tilt_deg)
        fragment = 1.0 - ramp(vratio, *cfg.fragment_ratio)  # a small piece below the last full disc
        f["size"] = max(ramp(ratio, *cfg.depth_ratio), ramp(vratio, *cfg.volume_ratio), fragment)
        f["tilt_deg"], f["depth_ratio"], f["volume_ratio"] = round(tilt, 1), round(ratio, 3), round(vratio, 3)
    score = sum(w * f[k] for k, w in SACRUM_WEIGHTS.items())
    return float(score), {k: round(float(v), 3) for k, v in f.items()}


def _choose_anchor(col: Column, anchor: str, top_name: str, seq: list[int], cfg: InstanceConfig,
                   warn: list[str]) -> tuple[str, int, int, float, str]:
    """(mode, index of the anchor body, its position in ``seq``, base confidence, reason)."""
    n, low, s1 = len(col.bodies), col.bodies[-1], seq.index(26)
    score, feats = col.score, col.features
    below = _substantial(col.slots.get(n - 1, []), col.remnant_mm3)
    disc_room = min((d.lowest_k for d, _ in below), default=0) * col.spacing_k
    if anchor == "sacrum" or (anchor == "auto" and n >= 2 and score >= cfg.sacrum_threshold and feats["no_disc_below"] > 0):
        if score < cfg.sacrum_threshold:
            warn.append(f"S1 forced although the lowest body does not look like a sacrum (score {score:.2f})")
        return "sacrum", n - 1, s1, 0.5 + 0.5 * score, f"the lowest body is S1 (sacrum score {score:.2f})"
    if anchor == "l5" or (anchor == "auto" and below and disc_room >= 0.5 * col.step):
        return "l5", n - 1, s1 - 1, 0.65, "a disc below the lowest body, nothing below it although the image continues: L5-S1"
    if anchor == "auto" and not col.discs and not low.cut_lo and low.lowest_k * col.spacing_k >= 0.5 * col.step:
        warn.append("lowest body assumed L5 (no disc and no sacrum segmented below it); it might be S1")
        return "l5", n - 1, s1 - 1, 0.5, "no disc segmented; the lowest body ends inside the image and is not sacrum-like: L5"
    warn.append("lumbosacral junction not visible: levels counted from the top, may be off by one")
    return "top", 0, seq.index(VERTEBRA_IDS[top_name.upper()]), 0.3, f"the top body is taken as {top_name.upper()}"


def _transitional(col: Column, n_lumbar: int, n_k: int, cfg: InstanceConfig, warn: list[str]) -> float:
    """Transitional-anatomy warnings when S1 is the anchor; returns the confidence factor."""
    factor, n = 1.0, len(col.bodies)
    if col.discs:
        median_disc = float(np.median([d.volume_mm3 for d in col.discs]))
        above_s1 = sum(d.volume_mm3 for d, _ in col.slots.get(n - 2, []))
        if above_s1 < cfg.thin_disc_ratio * median_disc:
            warn.append(f"{TRANSITIONAL}: the lowest mobile disc is thin or missing")
            factor *= 0.8
    if col.score < 0.69:  # the semantic evidence alone (disc above, none below, complete) scores 0.7
        warn.append(f"{TRANSITIONAL}: the S1 candidate is ambiguous (sacrum score {col.score:.2f})")
        factor *= 0.85
    top, mobile = col.bodies[0], n - 1
    room_above = (n_k - 1 - top.highest_k) * col.spacing_k
    if not top.cut_hi and room_above >= 0.5 * col.step and abs(mobile - n_lumbar) == 1:
        warn.append(f"{TRANSITIONAL}: the segmented column ends inside the field of view with {mobile} mobile bodies "
                    f"above S1; counted with {n_lumbar} lumbar vertebrae")
        factor *= 0.8
    return factor


def _disc_id(i: int, t: float, pos: np.ndarray, seq: list[int]) -> int | None:
    """Disc id for chain slot ``i`` (body above; -1 above the top) at position ``t`` in the slot."""
    if i == -1 or (i + 1 < len(pos) and t >= 0.5 and pos[i + 1] - pos[i] > 1):
        p = (pos[0] if i == -1 else pos[i + 1]) - 1  # beside a gap: the disc just above the lower body
        return DISC_OFFSET + seq[p] if p >= 0 else None
    return DISC_OFFSET + seq[pos[i]]


def _column(ras: Volume, cfg: InstanceConfig, report: dict) -> tuple[Column | None, np.ndarray, np.ndarray]:
    """Bodies (ordered superior first), discs on their chain slots, and the two component maps."""
    spacing = np.asarray(ras.spacing)
    disc_lab, _ = ndimage.label(ras.array == 2)
    body_lab, bridged = split_bridged(ras.array == 1, spacing, cfg.min_body_mm3, cfg.split_radius_mm)
    body_lab, around_disc = split_at_discs(body_lab, disc_lab, spacing, cfg.min_body_mm3)
    report["split_bodies"] = bridged + around_disc
    bodies, report["dropped_components"]["vertebra"] = measure_parts(body_lab, ras, cfg.min_body_mm3)
    discs, report["dropped_components"]["disc"] = measure_parts(disc_lab, ras, cfg.min_disc_mm3)
    if not bodies:
        return None, body_lab, disc_lab
    axis = column_axis(np.array([b.centroid for b in bodies]))
    bodies.sort(key=lambda b: -float(b.centroid @ axis))
    chain = np.array([b.centroid for b in bodies])
    steps = np.linalg.norm(np.diff(chain, axis=0), axis=1)
    step = float(np.median(steps)) if len(steps) else 30.0
    gaps = [round(float(s / step)) - 1 if (len(steps) >= 3 and s > 1.6 * step) else 0 for s in steps]
    col = Column(bodies, discs, {}, axis, step, gaps, float(spacing[2]))
    for d in discs:
        i, t, dist = disc_slot(d.centroid, chain, step)
        if dist > off_chain_mm(step):
            report["warnings"].append(f"a disc component ({d.volume_mm3:.0f} mm^3) lies {dist:.0f} mm off the spine: dropped")
        else:
            col.slots.setdefault(i, []).append((d, t))
    slotted = [d.volume_mm3 for items in col.slots.values() for d, _ in items]
    col.remnant_mm3 = cfg.remnant_disc_ratio * float(np.median(slotted)) if slotted else 0.0
    col.sacral = _split_sacral(col, cfg)
    bodies = col.bodies
    room_below = bodies[-1].lowest_k * spacing[2] >= 0.25 * step
    col.score, col.features = _sacrum_score(bodies, col.slots, col.remnant_mm3, bool(discs), room_below, cfg)
    return col, body_lab, disc_lab


def assign_levels(semantic: Volume, *, anchor: str = "auto", n_lumbar: int | None = None, top_name: str = "L1",
                  config: InstanceConfig | None = None) -> tuple[Volume, dict]:
    """Vertebra and disc instances with level ids from a semantic map (rules: module docstring).

    Args:
        semantic: semantic map (0 background, 1 vertebral body, 2 disc) in any orientation.
        anchor: 'auto', or force 'sacrum' (the lowest body is S1), 'l5' (the lowest body is L5) or
            'top' (the top body is ``top_name``).
        n_lumbar: 6 to count an L6 (id 25) between L5 and S1 (known e.g. from a whole-spine
            localiser); None or 5: five lumbar vertebrae.
        top_name: the top body's name for the 'top' anchor ('L1', 'T12', ...).
        config: thresholds (`InstanceConfig`).

    Returns:
        ``(instances, report)``: an int16 instance map on the input's exact grid (L1..L5 = 20..24,
        L6 = 25, S1 = 26, T12 = 19, discs 100 + vertebra above) and a JSON-able report with
        ``anchor`` ('sacrum' | 'l5' | 'top' | 'none' when no body), ``anchor_reason``,
        ``confidence`` in [0, 1], ``warnings``, ``sacrum_score``, ``sacrum_features``,
        ``missing_levels``, ``split_bodies``, ``dropped_components``, ``n_lumbar`` and
        ``instances`` (superior to inferior: id, name, kind 'vertebra' | 'disc', centroid_mm in
        LPS world mm like `Volume.affine`, volume_mm3, n_voxels).

    Raises:
        ValueError: labels other than 0/1/2 (named), an unknown anchor, n_lumbar or top_name.
        TypeError: ``semantic`` is not a Volume.
    """
    cfg = config or InstanceConfig()
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    if n_lumbar not in (None, 5, 6):
        raise ValueError(f"n_lumbar must be None, 5 or 6, got {n_lumbar!r}")
    lumbar = n_lumbar or 5
    seq = [v for v in CRANIOCAUDAL_ORDER if v != 28 and (v != 25 or lumbar == 6)]
    if VERTEBRA_IDS.get(str(top_name).upper()) not in seq[:-1]:
        raise ValueError(f"top_name must name a vertebra C1..L{lumbar}, got {top_name!r}")
    data = _check_semantic(semantic)
    ras, undo = reorient(semantic.with_array(data), "RAS")
    report: dict = {"anchor": "none", "anchor_reason": "", "confidence": 0.0, "warnings": [], "n_lumbar": lumbar,
                    "sacrum_score": None, "sacrum_features": {}, "missing_levels": [], "split_bodies": 0,
                    "dropped_components": {"vertebra": 0, "disc": 0}, "instances": []}
    warn = report["warnings"]
    col, body_lab, disc_lab = _column(ras, cfg, report)
    out = np.zeros(ras.shape, np.int16)
    if col is None:
        warn.append("no vertebral body found: empty instance map" + (" (discs cannot be labelled alone)" if disc_lab.any() else ""))
        return undo.undo(ras.with_array(out)), report
    if report["split_bodies"]:
        warn.append(f"{report['split_bodies']} merged body component(s) split (thin bridge or a disc inside)")
    report["sacrum_score"], report["sacrum_features"] = round(col.score, 3), col.features

    n, s1 = len(col.bodies), seq.index(26)
    mode, k_a, pos_a, conf, report["anchor_reason"] = _choose_anchor(col, anchor, top_name, seq, cfg, warn)
    report["anchor"] = mode
    offsets = np.arange(n) + np.concatenate([[0], np.cumsum(col.gaps)]).astype(int)
    pos = pos_a + offsets - offsets[k_a]
    if mode != "sacrum" and pos[-1] >= s1:
        counted = f"{n} bodies from {vertebra_name(seq[pos[0]])} down"
        # a top-down count that reaches S1 keeps it unless a disc lies below the lowest body (L5-S1)
        if mode == "top" and col.features.get("no_disc_below", 0.0) > 0:
            warn.append(f"{counted} reach S1: the lowest body, with no disc below it, is read as S1"
                        + ("" if pos[-1] == s1 else ", counted up from it"))
            pos = pos - (pos[-1] - s1)
        else:
            warn.append(f"{counted} do not fit above S1: counted up from L{lumbar}")
            pos = pos - (pos[-1] - (s1 - 1))
    if pos[0] < 0:
        warn.append("more bodies than vertebral levels above the anchor: the top ones share C1")
        pos = np.maximum(pos, 0)
    ids = [seq[p] for p in pos]
    for i, g in enumerate(col.gaps):
        if g:
            missing = [vertebra_name(seq[p]) for p in range(pos[i] + 1, pos[i + 1])]
            report["missing_levels"] += missing
            warn.append(f"gap between {vertebra_name(ids[i])} and {vertebra_name(ids[i + 1])}: {missing} not segmented")
            conf *= 0.7
    if mode == "sacrum":
        if k_a > 0 and col.gaps[k_a - 1]:  # a missed L5, or a missed S1 with S2 read as S1: both fit the gap
            above = vertebra_name(seq[pos[k_a] - 1])
            warn.append(f"a level is missing right above S1: {above} not segmented, or S1 not segmented and the "
                        "body taken for S1 is a lower sacral one: may be off by one")
            conf *= 0.5
        conf *= _transitional(col, lumbar, ras.shape[2], cfg, warn)
    if n < 4:
        warn.append(f"field of view too small to be sure: only {n} bod{'y' if n == 1 else 'ies'}")
        conf *= 0.5 if n <= 2 else 0.75
    report["confidence"] = round(float(np.clip(conf, 0.0, 1.0)), 3)

    entries = [(b, v, "vertebra") for b, v in zip(col.bodies, ids)]
    for i, items in sorted(col.slots.items()):
        for d, t in items:
            v = _disc_id(i, t, pos, seq)
            if v is None:
                warn.append("a disc above the top body has no level: dropped")
            elif v == DISC_OFFSET + 26:  # no id in the convention (SPINEPS/VerSe): not an instance
                warn.append("a disc component below S1 (S1-S2 remnant) is left out of the instances")
            else:
                entries.append((d, v, "disc"))
    for part, v, kind in entries:
        out[(body_lab if kind == "vertebra" else disc_lab) == part.label] = v
    if col.sacral:
        warn.append(f"{len(col.sacral)} body component(s) below {vertebra_name(ids[-1])}, under the lowest full-size "
                    f"disc, joined it (lower sacral segments)")
        out[np.isin(body_lab, [p.label for p in col.sacral])] = ids[-1]
    entries.sort(key=lambda e: -float(e[0].centroid @ col.axis))
    report["instances"] = [{"id": int(v), "name": vertebra_name(int(v)), "kind": kind,
                            "centroid_mm": [round(float(c), 2) for c in p.centroid],
                            "volume_mm3": round(p.volume_mm3, 1), "n_voxels": p.n_voxels} for p, v, kind in entries]
    for msg in warn:
        log.info("assign_levels: %s", msg)
    return undo.undo(ras.with_array(out)), report
