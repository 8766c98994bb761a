"""Tissue table of the physics contrast mode and per-label tissue sampling.

Every tissue of `labels.TISSUES` has literature ranges for T1, T2 and T2* (ms) at 1.5 T and 3 T, a
relative proton density (PD, water = 1) and a fat fraction (proton-density fat fraction, 0-1).
Relaxation times are those of the *water* component; a voxel's fat component (fraction
``fat_fraction`` of its protons) relaxes with `FAT_COMPONENT` and resonates with the multi-peak
fat spectrum of `physics.FAT_PEAKS_PPM`. Ranges are deliberately wider than one study's mean +/- SD
because reported values spread widely between methods (Bojorquez et al. 2017 report fat T2 from 41
to 371 ms at 3 T) and with age and degeneration. Field strengths between 1.5 and 3 T interpolate
the range bounds linearly.

`physics_contrast.PhysicsContrast` turns these into per-label intensities for a random sequence.

References:
    [Baz04] de Bazelaire CMJ, Duhamel GD, Rofsky NM, Alsop DC. MR imaging relaxation times of
        abdominal and pelvic tissues measured in vivo at 3.0 T: preliminary results. Radiology
        2004;230:652-659. (3 T: paravertebral muscle T1 898 / T2 29, L4 marrow 586 / 49,
        subcutaneous fat 382 / 68, liver 809 / 34, spleen 1328 / 61, kidney 1142-1545 / 76-81 ms;
        1.5 T values about 5-20 % shorter in T1.)
    [Sta05] Stanisz GJ, Odrobina EE, Pun J, et al. T1, T2 relaxation and magnetization transfer in
        tissue at 3T. Magn Reson Med 2005;54:507-512. (muscle T1 1008 / 1412 ms at 1.5 / 3 T,
        spinal cord T1 745 / 993 ms, T2 about 75 ms.)
    [Gol04] Gold GE, Han E, Stainsby J, et al. Musculoskeletal MRI at 3.0 T: relaxation times and
        image contrast. AJR 2004;183:343-351. (muscle, marrow, fat, cartilage at 1.5 and 3 T.)
    [Boj17] Bojorquez JZ, Bricq S, Acquitter C, et al. What are normal relaxation times of tissues
        at 3 T? Magn Reson Imaging 2017;35:69-80. (review of the spread of reported values.)
    [Smi08] Smith SA, Edden RAE, Farrell JAD, et al. Measurement of T1 and T2 in the cervical spinal
        cord at 3 Tesla. Magn Reson Med 2008;60:213-219.
    [Mar09] Marinelli NL, Haughton VM, Munoz A, Anderson PA. T2 relaxation times of intervertebral
        disc tissue correlated with water content and proteoglycan content. Spine 2009;34:520-524.
    [Blu10] Blumenkrantz G, Zuo J, Li X, et al. In vivo 3.0-T T1rho and T2 relaxation mapping in
        subjects with intervertebral disc degeneration. Magn Reson Med 2010;63:1193-1200.
    [Men15] Menezes-Reis R, Salmon CEG, Carvalho CS, et al. T1 and T2 mapping of the intervertebral
        disk: comparison of different methods of segmentation. AJNR 2015. (1.5 T, Pfirrmann I-IV.)
    [Bau18] Baum T, Rohrmeier A, Syvari J, et al. Anatomical variation of age-related changes in
        vertebral bone marrow composition using chemical shift encoding-based water-fat MRI.
        Front Endocrinol 2018;9:141. (L1-L4 PDFF about 0.27-0.35 in the twenties, rising with age.)
    [Kar18] Karampinos DC, Ruschke S, Dieckmeyer M, et al. Quantitative MRI and spectroscopy of bone
        marrow. J Magn Reson Imaging 2018;47:332-353. (marrow water / fat T1, T2, T2*.)
    [Ham11] Hamilton G, Yokoo T, Bydder M, et al. In vivo characterization of the liver fat 1H MR
        spectrum. NMR Biomed 2011;24:784-790. (multi-peak fat spectrum and fat relaxation.)
    [Du13] Du J, Bydder GM. Qualitative and quantitative ultrashort-TE MRI of cortical bone. NMR
        Biomed 2013;26:489-506. (cortical bone T1 about 220 ms, T2* 0.3-0.5 ms at 3 T.)

The numbers are literature-informed sampling priors, not measurements: widen or narrow them here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..labels import TISSUES

Range = tuple[float, float]

FIELD_STRENGTHS_T: tuple[float, float] = (1.5, 3.0)
"""Field strengths (T) at which the table is given; others in between interpolate the bounds."""


def _check_range(name: str, value: Range, positive: bool = True, upper: float | None = None) -> None:
    lo, hi = value
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo or (positive and lo <= 0) or lo < 0:
        raise ValueError(f"{name}: invalid range {value}")
    if upper is not None and hi > upper:
        raise ValueError(f"{name}: range {value} exceeds {upper}")


@dataclass(frozen=True)
class TissueProperties:
    """Literature ranges of one tissue (water component) at 1.5 T and 3 T.

    Attributes:
        name: one of `labels.TISSUES`.
        t1: ((lo, hi) at 1.5 T, (lo, hi) at 3 T), ms; sampled log-uniformly.
        t2: same for T2, ms; sampled log-uniformly.
        t2star: same for T2*, ms (clipped to <= the sampled T2); sampled log-uniformly.
        pd: relative proton density (water = 1), sampled uniformly.
        fat_fraction: proton-density fat fraction (0-1), sampled uniformly.
        source: where the numbers come from (keys of the module docstring).
    """

    name: str
    t1: tuple[Range, Range]
    t2: tuple[Range, Range]
    t2star: tuple[Range, Range]
    pd: Range
    fat_fraction: Range
    source: str = ""

    def __post_init__(self) -> None:
        for key in ("t1", "t2", "t2star"):
            for field_t, rng in zip(FIELD_STRENGTHS_T, getattr(self, key)):
                _check_range(f"{self.name}.{key} at {field_t} T", rng)
        _check_range(f"{self.name}.pd", self.pd, upper=1.0)
        _check_range(f"{self.name}.fat_fraction", self.fat_fraction, positive=False, upper=1.0)


@dataclass(frozen=True)
class FatComponent:
    """Relaxation of the fat (triglyceride) component, ms, at (1.5 T, 3 T).

    Subcutaneous fat, whose signal is ~90 % fat, has T1 343 / 382 ms and T2 58 / 68 ms at
    1.5 / 3 T [Baz04]; textbook adipose T1 at 1.5 T is 240-260 ms; STIR nulls fat at 1.5 T with
    TI ~ 150-180 ms (T1 ~ TI / ln 2 ~ 220-260 ms). Fat T2* ~ 20-60 ms ([Ham11], [Kar18]).
    """

    t1: tuple[Range, Range] = ((240.0, 350.0), (300.0, 420.0))
    t2: tuple[Range, Range] = ((50.0, 85.0), (45.0, 80.0))
    t2star: tuple[Range, Range] = ((25.0, 60.0), (15.0, 40.0))

    def __post_init__(self) -> None:
        for key in ("t1", "t2", "t2star"):
            for field_t, rng in zip(FIELD_STRENGTHS_T, getattr(self, key)):
                _check_range(f"fat component {key} at {field_t} T", rng)


FAT_COMPONENT = FatComponent()

_T = TissueProperties
TISSUE_TABLE: dict[str, TissueProperties] = {
    t.name: t
    for t in (
        # Air / background: (almost) no protons; relaxation values irrelevant.
        _T("air", ((500, 1500), (500, 1500)), ((20, 100), (20, 100)), ((5, 50), (5, 50)), (0.001, 0.01), (0.0, 0.0),
           "no signal"),
        # Adipose tissue: ~90 % fat [Bau18, Kar18]; the small water part relaxes like lean tissue.
        _T("fat", ((800, 1200), (1000, 1500)), ((30, 50), (25, 45)), ((15, 35), (10, 25)), (0.85, 1.0), (0.85, 0.95),
           "Baz04, Ham11; fat component: FAT_COMPONENT"),
        # Paraspinal muscle: T1 856 / 898 [Baz04] to 1008 / 1412 [Sta05], ~1420 at 3 T [Gol04]; T2 27-44 ms;
        # PDFF a few percent, rising with age.
        _T("muscle", ((850, 1150), (900, 1450)), ((27, 45), (27, 45)), ((22, 35), (18, 30)), (0.65, 0.8), (0.02, 0.15),
           "Baz04, Sta05, Gol04, Boj17"),
        # CSF ~ free water: T1 ~4 s, T2 1-2 s in vivo; T2* shortened by pulsation.
        _T("csf", ((3500, 4500), (3700, 4800)), ((1000, 2300), (900, 2200)), ((150, 800), (100, 600)), (0.95, 1.0),
           (0.0, 0.0), "Boj17"),
        # Spinal cord: 745 / 993 ms [Sta05]; in vivo 3 T ~ 850-1000 ms, T2 ~ 70-80 ms [Smi08].
        _T("cord", ((650, 950), (850, 1150)), ((65, 95), (60, 90)), ((40, 70), (30, 55)), (0.7, 0.85), (0.0, 0.0),
           "Sta05, Smi08"),
        # Vertebral marrow, water component (apparent marrow T1 549 / 586, T2 49 ms [Baz04] as a water-fat mix);
        # T2* short from trabecular susceptibility [Kar18]; PDFF ~0.3 young, up to ~0.7 elderly [Bau18].
        _T("marrow", ((600, 1100), (750, 1300)), ((35, 60), (30, 55)), ((10, 30), (5, 15)), (0.8, 1.0), (0.25, 0.75),
           "Baz04, Gol04, Kar18, Bau18"),
        # Cortical bone: bound + pore water, T1 ~ 220 ms, T2* 0.3-0.5 ms, ~15-25 % water by volume [Du13].
        _T("cortical_bone", ((150, 300), (180, 350)), ((0.5, 3.0), (0.4, 2.5)), ((0.3, 1.5), (0.25, 1.2)),
           (0.05, 0.2), (0.0, 0.05), "Du13"),
        # Endplate (cartilaginous + bony): cartilage-like T1, short T2 / T2*, dark on routine images.
        _T("endplate", ((700, 1100), (900, 1300)), ((8, 30), (6, 25)), ((2, 15), (1.5, 10)), (0.3, 0.6), (0.0, 0.1),
           "Gol04, Du13"),
        # Nucleus pulposus: T2 ~40 (degenerated) to ~150 ms (healthy) at 1.5 T [Mar09, Men15], [Blu10] at 3 T.
        _T("nucleus", ((900, 1400), (1100, 1700)), ((40, 150), (35, 140)), ((20, 80), (15, 60)), (0.75, 0.95),
           (0.0, 0.0), "Mar09, Men15, Blu10"),
        # Annulus fibrosus: more collagen, shorter T2.
        _T("annulus", ((700, 1100), (850, 1300)), ((30, 70), (25, 60)), ((10, 35), (8, 25)), (0.6, 0.8), (0.0, 0.0),
           "Mar09, Men15"),
        # Ligaments (ALL, PLL, flavum, interspinous): very short T2, low visible PD.
        _T("ligament", ((500, 900), (600, 1100)), ((2, 25), (1.5, 20)), ((0.8, 10), (0.6, 8)), (0.2, 0.5), (0.0, 0.05),
           "Du13, Boj17"),
        # Viscera (liver, spleen, kidney, bowel wall, vessels) [Baz04].
        _T("viscera", ((550, 1450), (700, 1600)), ((35, 90), (30, 85)), ((15, 60), (10, 45)), (0.7, 0.9), (0.0, 0.1),
           "Baz04"),
        # EM clusters of unknown tissue: a broad physiological prior.
        _T("unknown", ((200, 4000), (200, 4000)), ((20, 2000), (20, 2000)), ((5, 1000), (5, 1000)), (0.1, 1.0),
           (0.0, 1.0), "broad prior"),
    )
}
del _T

if tuple(TISSUE_TABLE) != TISSUES:
    raise ValueError(f"TISSUE_TABLE {tuple(TISSUE_TABLE)} does not match labels.TISSUES {TISSUES}")

# Parameter columns: water t1, t2, t2star, pd, fat_fraction, fat-component t1, t2, t2star.
_COLUMNS = ("t1", "t2", "t2star", "pd", "fat_fraction", "t1_fat", "t2_fat", "t2star_fat")
_LOG = (True, True, True, False, False, True, True, True)


@dataclass
class TissueParams:
    """Per-label tissue parameters, each a float tensor [B, K].

    Attributes:
        t1, t2, t2star: water-component relaxation times, ms.
        pd: relative proton density (water = 1).
        fat_fraction: proton-density fat fraction (0-1).
        t1_fat, t2_fat, t2star_fat: fat-component relaxation times, ms.
    """

    t1: torch.Tensor
    t2: torch.Tensor
    t2star: torch.Tensor
    pd: torch.Tensor
    fat_fraction: torch.Tensor
    t1_fat: torch.Tensor
    t2_fat: torch.Tensor
    t2star_fat: torch.Tensor


def _build_bounds() -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds (lo, hi), each float32 [2 fields, n_tissues, n_columns], on the CPU."""
    fat = FAT_COMPONENT
    lo, hi = [], []
    for f in range(2):
        rows = []
        for name in TISSUES:
            t = TISSUE_TABLE[name]
            rows.append((t.t1[f], t.t2[f], t.t2star[f], t.pd, t.fat_fraction, fat.t1[f], fat.t2[f], fat.t2star[f]))
        lo.append([[r[0] for r in row] for row in rows])
        hi.append([[r[1] for r in row] for row in rows])
    return torch.tensor(lo, dtype=torch.float32), torch.tensor(hi, dtype=torch.float32)


_BOUNDS = _build_bounds()


def _table_bounds(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return _BOUNDS[0].to(device), _BOUNDS[1].to(device)


def _check_inputs(tissue_ids: torch.Tensor, field_strength: torch.Tensor) -> None:
    if not isinstance(tissue_ids, torch.Tensor) or tissue_ids.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                            torch.uint8, torch.int8):
        raise ValueError("tissue_ids: expected an integer tensor [B, K] of indices into labels.TISSUES")
    if tissue_ids.ndim != 2:
        raise ValueError(f"tissue_ids: expected shape [B, K], got {tuple(tissue_ids.shape)}")
    if tissue_ids.numel() and (int(tissue_ids.min()) < 0 or int(tissue_ids.max()) >= len(TISSUES)):
        raise ValueError(f"tissue_ids: indices must lie in [0, {len(TISSUES) - 1}] (labels.TISSUES), "
                         f"got [{int(tissue_ids.min())}, {int(tissue_ids.max())}]")
    if not isinstance(field_strength, torch.Tensor) or field_strength.shape != tissue_ids.shape[:1]:
        raise ValueError(f"field_strength: expected a tensor of shape [{tissue_ids.shape[0]}]")
    lo, hi = FIELD_STRENGTHS_T
    if field_strength.numel() and (float(field_strength.min()) < lo - 1e-6 or float(field_strength.max()) > hi + 1e-6):
        raise ValueError(f"field_strength: the tissue table covers {lo}-{hi} T, got "
                         f"[{float(field_strength.min())}, {float(field_strength.max())}]")


def tissue_parameters_from_unit(tissue_ids: torch.Tensor, field_strength: torch.Tensor,
                                unit: torch.Tensor) -> TissueParams:
    """Map positions ``unit`` in [0, 1] (shape [B, K, 8]) inside each tissue's ranges to parameters.

    Relaxation times map log-linearly (0 -> lo, 1 -> hi, 0.5 -> geometric mean), PD and fat fraction
    linearly. T2* is clipped to at most T2 (water and fat components separately).
    """
    _check_inputs(tissue_ids, field_strength)
    device = tissue_ids.device
    ids = tissue_ids.long()
    lo, hi = _table_bounds(device)
    w = ((field_strength.to(device, torch.float32) - FIELD_STRENGTHS_T[0])
         / (FIELD_STRENGTHS_T[1] - FIELD_STRENGTHS_T[0])).clamp(0, 1)[:, None, None]  # [B, 1, 1]
    lo_b = (lo[0][ids] * (1 - w) + lo[1][ids] * w)  # [B, K, C]
    hi_b = (hi[0][ids] * (1 - w) + hi[1][ids] * w)
    log = torch.tensor(_LOG, device=device)
    u = unit.to(device, torch.float32)
    lin = lo_b + (hi_b - lo_b) * u
    llo, lhi = torch.log(lo_b.clamp_min(1e-12)), torch.log(hi_b.clamp_min(1e-12))
    values = torch.where(log, torch.exp(llo + (lhi - llo) * u), lin)
    cols = dict(zip(_COLUMNS, values.unbind(-1)))
    cols["t2star"] = torch.minimum(cols["t2star"], cols["t2"])
    cols["t2star_fat"] = torch.minimum(cols["t2star_fat"], cols["t2_fat"])
    return TissueParams(**cols)


def nominal_tissue_parameters(tissue_ids: torch.Tensor, field_strength: torch.Tensor) -> TissueParams:
    """Deterministic mid-range parameters (geometric mean of relaxation bounds, mean of PD and fat fraction)."""
    unit = torch.full((*tissue_ids.shape, len(_COLUMNS)), 0.5, device=tissue_ids.device)
    return tissue_parameters_from_unit(tissue_ids, field_strength, unit)


def sample_tissue_parameters(tissue_ids: torch.Tensor, field_strength: torch.Tensor, generator: torch.Generator,
                             label_jitter: float = 0.15) -> TissueParams:
    """Draw tissue parameters per batch item and label within the literature ranges of `TISSUE_TABLE`.

    Each batch item (subject) draws one position per tissue and parameter; each label then moves
    from it by up to ``label_jitter`` of the range (reflected at the range ends), so two labels of
    the same tissue in one sample are similar but not identical, and every label's marginal is
    exactly uniform (log-uniform for relaxation times) within its range.

    Args:
        tissue_ids: integer tensor [B, K], indices into `labels.TISSUES`.
        field_strength: tensor [B], tesla, within 1.5-3.0 (bounds interpolate linearly in between).
        generator: the random source (draws happen on its device, then move to ``tissue_ids``'s).
        label_jitter: 0 gives identical values for labels of one tissue, 1 independent draws.

    Returns:
        `TissueParams` of float32 tensors [B, K] on ``tissue_ids.device``.

    Raises:
        ValueError: naming ``tissue_ids``, ``field_strength`` or ``label_jitter`` when invalid.
    """
    if not 0.0 <= float(label_jitter) <= 1.0:
        raise ValueError(f"label_jitter: must be in [0, 1], got {label_jitter}")
    _check_inputs(tissue_ids, field_strength)
    b, k = tissue_ids.shape
    c = len(_COLUMNS)
    gdev = generator.device
    subject = torch.rand((b, len(TISSUES), c), generator=generator, device=gdev).to(tissue_ids.device)
    noise = torch.rand((b, k, c), generator=generator, device=gdev).to(tissue_ids.device) * 2 - 1
    base = torch.gather(subject, 1, tissue_ids.long()[..., None].expand(b, k, c))
    x = torch.remainder(base + float(label_jitter) * noise, 2.0)
    unit = torch.where(x > 1, 2 - x, x)  # reflect into [0, 1]: keeps the marginal uniform
    return tissue_parameters_from_unit(tissue_ids, field_strength, unit)


def nominal_fat_t1(field_strength: torch.Tensor) -> torch.Tensor:
    """Mid-range (geometric mean) fat-component T1 in ms at ``field_strength`` (T), interpolated."""
    mids = [math.sqrt(a * b) for a, b in FAT_COMPONENT.t1]
    w = ((field_strength - FIELD_STRENGTHS_T[0]) / (FIELD_STRENGTHS_T[1] - FIELD_STRENGTHS_T[0])).clamp(0, 1)
    return mids[0] * (1 - w) + mids[1] * w


def tissue_index(name: str) -> int:
    """Index of a tissue name in `labels.TISSUES` (ValueError naming it when unknown)."""
    try:
        return TISSUES.index(name)
    except ValueError:
        raise ValueError(f"tissue: unknown tissue {name!r}; known: {TISSUES}") from None


# ----------------------------------------------------------------------------- per-label contrasts
