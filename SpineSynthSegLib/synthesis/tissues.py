"""Tissue table of the physics contrast mode, per-label tissue sampling and `PhysicsContrast`.

Every tissue of `labels.TISSUES` has literature ranges for T1, T2 and T2* (ms) at 1.5 T and 3 T, a
relative proton density (PD, water = 1) and a fat fraction (proton-density fat fraction, 0-1).
Relaxation times are those of the *water* component; a voxel's fat component (fraction
``fat_fraction`` of its protons) relaxes with `FAT_COMPONENT` and resonates with the multi-peak
fat spectrum of `physics.FAT_PEAKS_PPM`. Ranges are deliberately wider than one study's mean +/- SD
because reported values spread widely between methods (Bojorquez et al. 2017 report fat T2 from 41
to 371 ms at 3 T) and with age and degeneration. Field strengths between 1.5 and 3 T interpolate
the range bounds linearly.

`PhysicsContrast` turns tissue ids [B, K] into per-label (means, stds) [B, K] from a random sequence
(spin echo, STIR, spoiled GRE, Dixon water-fat) using the signal equations of `physics.py`, so it can
replace the per-label Gaussian means of the domain-randomization mode.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..labels import TISSUES
from .physics import DIXON_OUTPUTS, dixon_echo_times, fat_null_ti, inversion_recovery, spin_echo, water_fat_gre
from .sampling import Choice, LogUniform, Sampler, make_sampler

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


@dataclass
class PhysicsParams:
    """One draw of `PhysicsContrast`: tensors [B] unless stated.

    Attributes:
        sequence: long, index into `SEQUENCES`.
        field_strength: T.
        tr, te, ti: ms (ti = 0 for sequences without inversion).
        flip_deg: degrees (90 for spin echo and inversion recovery).
        dixon_output: long, index into `DIXON_OUTPUTS` (used by 'water_fat' only).
        std_fraction: [B, K], within-label texture std as a fraction of the mean.
        tissues: `TissueParams` of [B, K] tensors.
    """

    sequence: torch.Tensor
    field_strength: torch.Tensor
    tr: torch.Tensor
    te: torch.Tensor
    ti: torch.Tensor
    flip_deg: torch.Tensor
    dixon_output: torch.Tensor
    std_fraction: torch.Tensor
    tissues: TissueParams


SEQUENCES: tuple[str, ...] = ("spin_echo", "inversion_recovery", "spoiled_gre", "water_fat")
SamplerArg = Sampler | float | Sequence[float]
_FIELDS = Choice((1.5, 3.0))
_SE_TR = LogUniform(300.0, 5000.0)
_SE_TE = LogUniform(8.0, 120.0)
_DEFAULT_WEIGHTS = {"spin_echo": 0.4, "inversion_recovery": 0.2, "spoiled_gre": 0.2, "water_fat": 0.2}


class PhysicsContrast(torch.nn.Module):
    """Per-label mean intensities from tissue physics and a random MR sequence.

    For each batch item: a field strength, a sequence and its timing, and per-label tissue
    parameters (`tissues.sample_tissue_parameters`) are drawn; every label's signal is computed
    with water and fat components (`spin_echo`, `inversion_recovery`, `water_fat_gre`) and
    normalised by the maximum over labels, so the means lie in [0, 1].

    Args:
        field_strength: T, within 1.5-3; default Choice(1.5, 3.0).
        sequence_weights: relative weight per name in `SEQUENCES` (missing names weigh 0); default
            spin_echo 0.4, inversion_recovery 0.2, spoiled_gre 0.2, water_fat 0.2.
        se_tr, se_te: spin echo / TSE TR and TE, ms; default LogUniform(300, 5000), LogUniform(8, 120).
        ir_tr, ir_te: STIR TR and TE, ms; default Uniform(2500, 6000), Uniform(30, 80).
        ir_ti_jitter: relative deviation of TI from the fat-null TI (`fat_null_ti` with the nominal
            fat T1 at the field); default Uniform(-0.1, 0.1).
        gre_tr, gre_te, gre_flip: spoiled GRE TR, TE (ms), flip (degrees); default Uniform(5, 30),
            Uniform(2, 10), Uniform(5, 40).
        wf_tr, wf_flip: water-fat (Dixon) GRE TR (ms, >= 5.8 so that the 1.5 T in-phase TE of 4.6 ms fits) and flip (degrees); default Uniform(6, 20),
            Uniform(5, 25). TE is the opposed-phase TE (in-phase TE for the in-phase output).
        wf_output_weights: weights of `DIXON_OUTPUTS`; default equal.
        std_fraction: within-label texture std as a fraction of the mean; default Uniform(0.02, 0.1).
        label_jitter: see `tissues.sample_tissue_parameters`; default 0.15.

    TE is clipped to at most 0.8 TR so that the echo fits within the repetition.
    """

    def __init__(self, field_strength: SamplerArg = _FIELDS, sequence_weights: Mapping[str, float] | None = None,
                 se_tr: SamplerArg = _SE_TR, se_te: SamplerArg = _SE_TE,
                 ir_tr: SamplerArg = (2500.0, 6000.0), ir_te: SamplerArg = (30.0, 80.0),
                 ir_ti_jitter: SamplerArg = (-0.1, 0.1),
                 gre_tr: SamplerArg = (5.0, 30.0), gre_te: SamplerArg = (2.0, 10.0), gre_flip: SamplerArg = (5.0, 40.0),
                 wf_tr: SamplerArg = (6.0, 20.0), wf_flip: SamplerArg = (5.0, 25.0),
                 wf_output_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 std_fraction: SamplerArg = (0.02, 0.1), label_jitter: float = 0.15) -> None:
        super().__init__()
        weights = dict(_DEFAULT_WEIGHTS if sequence_weights is None else sequence_weights)
        unknown = set(weights) - set(SEQUENCES)
        if unknown or any(w < 0 or not math.isfinite(w) for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"sequence_weights: expected non-negative weights over {SEQUENCES} with a positive sum, "
                             f"got {dict(weights)}")
        self.sequence_weights = tuple(float(weights.get(s, 0.0)) for s in SEQUENCES)
        self._sequence = Choice(tuple(float(i) for i in range(len(SEQUENCES))), self.sequence_weights)
        if len(wf_output_weights) != len(DIXON_OUTPUTS) or min(wf_output_weights) < 0 or sum(wf_output_weights) <= 0:
            raise ValueError(f"wf_output_weights: expected {len(DIXON_OUTPUTS)} non-negative weights, "
                             f"got {wf_output_weights}")
        self._dixon = Choice(tuple(float(i) for i in range(len(DIXON_OUTPUTS))), tuple(map(float, wf_output_weights)))
        ms = {"min_value": 1e-3}
        self.field_strength = make_sampler(field_strength, "field_strength", min_value=1.5, max_value=3.0)
        self.se_tr, self.se_te = make_sampler(se_tr, "se_tr", **ms), make_sampler(se_te, "se_te", **ms)
        self.ir_tr, self.ir_te = make_sampler(ir_tr, "ir_tr", **ms), make_sampler(ir_te, "ir_te", **ms)
        self.ir_ti_jitter = make_sampler(ir_ti_jitter, "ir_ti_jitter", min_value=-0.9, max_value=2.0)
        self.gre_tr, self.gre_te = make_sampler(gre_tr, "gre_tr", **ms), make_sampler(gre_te, "gre_te", **ms)
        self.gre_flip = make_sampler(gre_flip, "gre_flip", min_value=0.0, max_value=180.0)
        self.wf_tr = make_sampler(wf_tr, "wf_tr", min_value=5.8)
        self.wf_flip = make_sampler(wf_flip, "wf_flip", min_value=0.0, max_value=180.0)
        self.std_fraction = make_sampler(std_fraction, "std_fraction", min_value=0.0)
        if not 0.0 <= float(label_jitter) <= 1.0:
            raise ValueError(f"label_jitter: must be in [0, 1], got {label_jitter}")
        self.label_jitter = float(label_jitter)

    def sample(self, tissue_ids: torch.Tensor, generator: torch.Generator) -> PhysicsParams:
        """Draw a `PhysicsParams` for tissue ids [B, K] (indices into `labels.TISSUES`)."""
        if not isinstance(tissue_ids, torch.Tensor) or tissue_ids.ndim != 2:
            raise ValueError("tissue_ids: expected an integer tensor [B, K]")
        b, k = tissue_ids.shape
        dev = tissue_ids.device

        def draw(s: Sampler) -> torch.Tensor:
            return s.sample((b,), generator, dev)

        b0 = draw(self.field_strength)
        seq = draw(self._sequence).long()
        dixon = draw(self._dixon).long()
        se = (draw(self.se_tr), draw(self.se_te))
        ir_tr, ir_te, jitter = draw(self.ir_tr), draw(self.ir_te), draw(self.ir_ti_jitter)
        ir_ti = fat_null_ti(ir_tr, nominal_fat_t1(b0)) * (1 + jitter)
        gre = (draw(self.gre_tr), draw(self.gre_te), draw(self.gre_flip))
        wf_tr, wf_flip = draw(self.wf_tr), draw(self.wf_flip)
        te_opp, te_in = dixon_echo_times(b0)
        wf_te = torch.where(dixon == 0, te_in, te_opp)
        zeros, ninety = torch.zeros_like(b0), torch.full_like(b0, 90.0)
        table = torch.stack([
            torch.stack([se[0], se[1], zeros, ninety]),
            torch.stack([ir_tr, ir_te, ir_ti, ninety]),
            torch.stack([gre[0], gre[1], zeros, gre[2]]),
            torch.stack([wf_tr, wf_te, zeros, wf_flip]),
        ])  # [S, 4, B]
        tr, te, ti, flip = table[seq, :, torch.arange(b, device=dev)].unbind(-1)
        te = torch.minimum(te, 0.8 * tr)
        std = self.std_fraction.sample((b, k), generator, dev)
        tissues = sample_tissue_parameters(tissue_ids, b0, generator, self.label_jitter)
        return PhysicsParams(seq, b0, tr, te, ti, flip, dixon, std, tissues)

    def apply(self, params: PhysicsParams) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-label (means, stds), each float [B, K]; means normalised to max 1 per batch item."""
        tp = params.tissues
        tr, te, ti, flip, b0, dixon = (x[:, None] for x in (params.tr, params.te, params.ti, params.flip_deg,
                                                             params.field_strength, params.dixon_output))
        ff = tp.fat_fraction
        ones = torch.ones_like(tp.pd)

        def mix(fn: Callable[..., torch.Tensor], *timing: torch.Tensor) -> torch.Tensor:
            return tp.pd * ((1 - ff) * fn(ones, tp.t1, tp.t2, *timing) + ff * fn(ones, tp.t1_fat, tp.t2_fat, *timing))

        wf_args = (tp.pd, ff, tp.t1, tp.t2star, tp.t1_fat, tp.t2star_fat, tr, flip, b0)
        echo = water_fat_gre(*wf_args, te=te, output="echo")
        wf = torch.where(dixon == 2, water_fat_gre(*wf_args, te=te, output="water"),
                         torch.where(dixon == 3, water_fat_gre(*wf_args, te=te, output="fat"), echo))
        signals = torch.stack([mix(spin_echo, tr, te), mix(inversion_recovery, tr, te, ti), echo, wf])  # [S, B, K]
        idx = params.sequence.long().view(1, -1, 1).expand(1, *tp.pd.shape)
        s = torch.gather(signals, 0, idx)[0]
        means = s / s.amax(dim=1, keepdim=True).clamp_min(1e-12)
        return means, params.std_fraction.to(means) * means

    def forward(self, tissue_ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``apply(sample(tissue_ids, generator))``: per-label (means, stds) [B, K]."""
        return self.apply(self.sample(tissue_ids, generator))


def nominal_physics_params(tissue_ids: torch.Tensor, sequence: str, field_strength: float = 1.5, tr: float = 500.0,
                           te: float = 15.0, ti: float = 0.0, flip_deg: float = 90.0,
                           dixon_output: str = "in_phase") -> PhysicsParams:
    """Deterministic `PhysicsParams` with mid-range tissue values (for inspection and tests).

    Args:
        tissue_ids: [B, K] indices into `labels.TISSUES`.
        sequence: one of `SEQUENCES`; field_strength: T; tr, te, ti: ms; flip_deg: degrees.
        dixon_output: one of `DIXON_OUTPUTS` ('water_fat' only; its TE then follows the field).
    """
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence: expected one of {SEQUENCES}, got {sequence!r}")
    if dixon_output not in DIXON_OUTPUTS:
        raise ValueError(f"dixon_output: expected one of {DIXON_OUTPUTS}, got {dixon_output!r}")
    b, k = tissue_ids.shape

    def full(v: float) -> torch.Tensor:
        return torch.full((b,), float(v), device=tissue_ids.device)

    b0 = full(field_strength)
    d = DIXON_OUTPUTS.index(dixon_output)
    if sequence == "water_fat":
        te_opp, te_in = dixon_echo_times(b0)
        te_t = te_in if d == 0 else te_opp
    else:
        te_t = full(te)
    return PhysicsParams(
        sequence=torch.full((b,), SEQUENCES.index(sequence), dtype=torch.long, device=tissue_ids.device),
        field_strength=b0, tr=full(tr), te=te_t, ti=full(ti), flip_deg=full(flip_deg),
        dixon_output=torch.full((b,), d, dtype=torch.long, device=tissue_ids.device),
        std_fraction=torch.zeros((b, k), device=tissue_ids.device),
        tissues=nominal_tissue_parameters(tissue_ids, b0))
