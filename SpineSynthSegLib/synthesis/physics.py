"""MR physics: signal equations and the SynthMRI qMRI path.

All PyTorch, batched and device-agnostic (device and dtype follow the inputs):

* Signal equations (pure functions on broadcastable tensors; times in ms, angles in degrees, field
  in tesla): `spin_echo`, `inversion_recovery`, `spoiled_gradient_echo`, `water_fat_gre`.
* The SynthMRI qMRI path (P. Arias Martinez, "Investigation of the influence of MR physics-based
  versus random intensity-based data synthesis methods for a generalizable spine segmentation
  network", MSc thesis, Utrecht University; section II.B eqs. 1-7 and II.D.1): `estimate_pd`
  (eq. 5), `synthesize_from_qmri` (eq. 6), `clean_qmri_maps` (625 ms clipping and a 3x3 in-plane
  median filter) and the random `QMRISynthesizer`.

The tissue table (`TissueParams`, `sample_tissue_parameters`: `tissues.py`) and the per-label
physics contrasts (`PhysicsContrast`: `physics_contrast.py`) are re-exported here lazily.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .sampling import Sampler, make_sampler

Number = torch.Tensor | float

GYROMAGNETIC_MHZ_PER_T = 42.577
"""Proton gyromagnetic ratio gamma / 2 pi, MHz/T."""
FAT_PEAKS_PPM: tuple[float, ...] = (-3.80, -3.40, -2.60, -1.94, -0.39, 0.60)
"""Six-peak fat spectrum, shifts relative to water in ppm (Hamilton et al. NMR Biomed 2011; Yu et al.
MRM 2008; the ISMRM 2012 fat-water challenge model). The main methylene peak is at -3.4 ppm."""
FAT_PEAK_AMPLITUDES: tuple[float, ...] = (0.087, 0.693, 0.128, 0.004, 0.039, 0.048)
"""Relative amplitudes of `FAT_PEAKS_PPM` (sum 1 after normalisation)."""
EPS_MS = 1e-3
"""Smallest relaxation time used in a division, ms."""
DIXON_OUTPUTS: tuple[str, ...] = ("in_phase", "opposed_phase", "water", "fat")


def _like(x: Number, ref: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(x, dtype=ref.dtype, device=ref.device)


# ----------------------------------------------------------------------------- signal equations


def spin_echo(pd: torch.Tensor, t1: Number, t2: Number, tr: Number, te: Number) -> torch.Tensor:
    """Spin-echo steady state S = PD (1 - exp(-TR/T1)) exp(-TE/T2) (SynthMRI eq. 1).

    Args:
        pd: proton density (any units); sets dtype and device.
        t1, t2: relaxation times, ms (clamped to >= `EPS_MS`).
        tr, te: repetition and echo time, ms. All arguments broadcast.
    """
    t1, t2 = _like(t1, pd).clamp_min(EPS_MS), _like(t2, pd).clamp_min(EPS_MS)
    return pd * (1 - torch.exp(-_like(tr, pd) / t1)) * torch.exp(-_like(te, pd) / t2)


def inversion_recovery(pd: torch.Tensor, t1: Number, t2: Number, tr: Number, te: Number, ti: Number) -> torch.Tensor:
    """Magnitude inversion recovery S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2) (STIR/TIRM/FLAIR).

    Args:
        pd: proton density; t1, t2: ms; tr, te, ti: repetition, echo and inversion time, ms.
    """
    t1, t2 = _like(t1, pd).clamp_min(EPS_MS), _like(t2, pd).clamp_min(EPS_MS)
    mz = 1 - 2 * torch.exp(-_like(ti, pd) / t1) + torch.exp(-_like(tr, pd) / t1)
    return pd * mz.abs() * torch.exp(-_like(te, pd) / t2)


def _spgr_t1(t1: torch.Tensor, tr: torch.Tensor, flip_deg: torch.Tensor) -> torch.Tensor:
    e1 = torch.exp(-tr / t1.clamp_min(EPS_MS))
    a = torch.deg2rad(flip_deg)
    return torch.sin(a) * (1 - e1) / (1 - torch.cos(a) * e1).clamp_min(1e-12)


def spoiled_gradient_echo(pd: torch.Tensor, t1: Number, t2star: Number, tr: Number, te: Number,
                          flip_deg: Number) -> torch.Tensor:
    """Spoiled GRE (FLASH) S = PD sin(a) (1 - E1) / (1 - cos(a) E1) exp(-TE/T2*), E1 = exp(-TR/T1).

    Args:
        pd: proton density; t1, t2star: ms; tr, te: ms; flip_deg: flip angle a, degrees.
    """
    t2s = _like(t2star, pd).clamp_min(EPS_MS)
    return pd * _spgr_t1(_like(t1, pd), _like(tr, pd), _like(flip_deg, pd)) * torch.exp(-_like(te, pd) / t2s)


def dixon_echo_times(field_strength: Number) -> tuple[torch.Tensor, torch.Tensor]:
    """(opposed-phase TE, in-phase TE) in ms for the main fat peak (-3.4 ppm) at ``field_strength`` (T).

    1.5 T: 2.30 / 4.61 ms; 3 T: 1.15 / 2.30 ms (TE = k / (2 df), df = 3.4 ppm x 42.577 MHz/T x B0).
    """
    b0 = torch.as_tensor(field_strength, dtype=torch.float32) if not isinstance(field_strength, torch.Tensor) \
        else field_strength
    df_hz = 3.4e-6 * GYROMAGNETIC_MHZ_PER_T * 1e6 * b0
    te_in = 1000.0 / df_hz
    return te_in / 2, te_in


def water_fat_gre(pd: torch.Tensor, fat_fraction: Number, t1_water: Number, t2star_water: Number, t1_fat: Number,
                  t2star_fat: Number, tr: Number, flip_deg: Number, field_strength: Number, te: Number | None = None,
                  output: str = "echo") -> torch.Tensor:
    """Magnitude spoiled-GRE signal of a water-fat voxel with a multi-peak fat spectrum (Dixon-style outputs).

    Water (fraction 1 - ff) and fat (fraction ff) each saturate with their own T1 and decay with
    their own T2*; fat precesses with the six-peak spectrum `FAT_PEAKS_PPM` (Hamilton et al. 2011):
    S(TE) = PD |(1-ff) W e^(-TE/T2*w) + ff F e^(-TE/T2*f) sum_p a_p e^(i 2 pi df_p TE)|, with W, F the
    spoiled-GRE T1 factors and df_p = ppm_p x 42.577 MHz/T x B0.

    Args:
        pd: proton density (sets dtype and device); fat_fraction: 0-1.
        t1_water, t2star_water, t1_fat, t2star_fat: ms.
        tr: ms; flip_deg: degrees; field_strength: T.
        te: echo time, ms; required for ``output='echo'``; for 'water' / 'fat' defaults to the
            opposed-phase TE; ignored for 'in_phase' / 'opposed_phase' (computed from the field).
        output: 'echo' (|water + fat| at ``te``), 'in_phase', 'opposed_phase', 'water' or 'fat'
            (ideally separated component magnitudes at ``te``).
    """
    if output not in ("echo", *DIXON_OUTPUTS):
        raise ValueError(f"output: expected 'echo' or one of {DIXON_OUTPUTS}, got {output!r}")
    b0 = _like(field_strength, pd)
    te_opp, te_in = dixon_echo_times(b0)
    if output == "in_phase":
        te = te_in
    elif output == "opposed_phase" or (te is None and output in ("water", "fat")):
        te = te_opp
    elif te is None:
        raise ValueError("te: required for output='echo'")
    te = _like(te, pd)
    tr, flip = _like(tr, pd), _like(flip_deg, pd)
    ff = _like(fat_fraction, pd)
    water = pd * (1 - ff) * _spgr_t1(_like(t1_water, pd), tr, flip) * torch.exp(
        -te / _like(t2star_water, pd).clamp_min(EPS_MS))
    fat = pd * ff * _spgr_t1(_like(t1_fat, pd), tr, flip) * torch.exp(-te / _like(t2star_fat, pd).clamp_min(EPS_MS))
    if output == "water":
        return water
    if output == "fat":
        return fat
    amps = torch.tensor(FAT_PEAK_AMPLITUDES, dtype=pd.dtype, device=pd.device)
    amps = amps / amps.sum()
    ppm = torch.tensor(FAT_PEAKS_PPM, dtype=pd.dtype, device=pd.device)
    phase = 2 * math.pi * ppm * GYROMAGNETIC_MHZ_PER_T * b0[..., None] * te[..., None] / 1000.0  # rad, [..., P]
    re = water + fat * (amps * torch.cos(phase)).sum(-1)
    im = fat * (amps * torch.sin(phase)).sum(-1)
    return torch.hypot(re, im)


def fat_null_ti(tr: Number, t1_fat: Number) -> torch.Tensor:
    """Inversion time (ms) nulling a T1 of ``t1_fat`` ms at repetition ``tr`` ms: T1 ln(2 / (1 + e^(-TR/T1))).

    For TR >> T1 this is the familiar TI = T1 ln 2 (STIR: ~160-180 ms at 1.5 T, ~220-250 ms at 3 T).
    """
    t1 = torch.as_tensor(t1_fat, dtype=torch.float32).clamp_min(EPS_MS) if not isinstance(t1_fat, torch.Tensor) \
        else t1_fat.clamp_min(EPS_MS)
    return t1 * torch.log(2 / (1 + torch.exp(-_like(tr, t1) / t1)))




# ----------------------------------------------------------------------------- SynthMRI qMRI path


def _per_item(x: Number, ref: torch.Tensor) -> torch.Tensor:
    """A per-batch-item value [B] reshaped to broadcast against ``ref`` [B, ...]; scalars unchanged."""
    t = _like(x, ref)
    if t.ndim == 1 and ref.ndim > 1 and t.shape[0] == ref.shape[0]:
        return t.view(-1, *([1] * (ref.ndim - 1)))
    return t


def estimate_pd(s_exp: torch.Tensor, t1: torch.Tensor, t2: torch.Tensor, tr_exp: Number, te_exp: Number,
                eps: float = 1e-6) -> torch.Tensor:
    """Apparent proton density from an acquired spin-echo image (SynthMRI eq. 5).

    PD = K rho = S_exp / ((1 - exp(-TR_exp/T1)) exp(-TE_exp/T2)): PD absorbs the scanner factor K
    (coil sensitivity, B1, receiver gain), so `synthesize_from_qmri` reproduces the acquisition.

    Args:
        s_exp: acquired image (e.g. T1w TSE: TR 436 / TE 8 ms; T2w: TR 2435 / TE 100 ms in the thesis).
        t1, t2: maps, ms (clamped to >= `EPS_MS`), broadcastable with ``s_exp``.
        tr_exp, te_exp: ms, scalars or per-item tensors [B].
        eps: the smallest denominator (guards tiny T1 / short T2 outliers against division blow-up).
    """
    tr, te = _per_item(tr_exp, s_exp), _per_item(te_exp, s_exp)
    t1, t2 = _like(t1, s_exp).clamp_min(EPS_MS), _like(t2, s_exp).clamp_min(EPS_MS)
    denom = (1 - torch.exp(-tr / t1)) * torch.exp(-te / t2)
    return s_exp / denom.clamp_min(eps)


def synthesize_from_qmri(t1: torch.Tensor, t2: torch.Tensor, pd_t1w: torch.Tensor, pd_t2w: torch.Tensor,
                         tr_s: Number, te_s: Number, te_threshold: float = 50.0) -> torch.Tensor:
    """Synthetic spin-echo image S_s = PD (1 - exp(-TR_s/T1)) exp(-TE_s/T2) (SynthMRI eq. 6).

    PD is the T1w-derived map when TE_s < ``te_threshold`` (50 ms in the thesis, Fig. 1), else the
    T2w-derived map, chosen per batch item. With TR_s, TE_s equal to the acquisition's, the output
    equals the acquired image (eq. 7).

    Args:
        t1, t2, pd_t1w, pd_t2w: maps [B, C, X, Y, Z] (any broadcastable shape), ms for T1 / T2.
        tr_s, te_s: ms, scalars or tensors [B].
        te_threshold: ms.
    """
    tr, te = _per_item(tr_s, t1), _per_item(te_s, t1)
    pd = torch.where(te < te_threshold, pd_t1w, pd_t2w)
    return spin_echo(pd, t1, t2, tr, te)


def median_filter_inplane(x: torch.Tensor, plane: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """3x3 median filter within the planes spanned by spatial axes ``plane`` of x [B, C, X, Y, Z].

    Borders replicate the edge values, so a constant map is unchanged. Memory: 9x the input.
    """
    if x.ndim != 5:
        raise ValueError(f"x: expected [B, C, X, Y, Z], got shape {tuple(x.shape)}")
    a, b = plane
    if {a, b} - {0, 1, 2} or a == b:
        raise ValueError(f"median_plane: expected two distinct spatial axes in (0, 1, 2), got {plane}")
    c = ({0, 1, 2} - {a, b}).pop()
    order = (0, 1, 2 + c, 2 + a, 2 + b)
    y = x.permute(order)
    shape = y.shape
    flat = y.reshape(-1, 1, shape[3], shape[4])
    patches = F.unfold(F.pad(flat, (1, 1, 1, 1), mode="replicate"), kernel_size=3)  # [N, 9, Xa * Xb]
    med = patches.median(dim=1).values.reshape(shape)
    inverse = [order.index(i) for i in range(5)]
    return med.permute(inverse).contiguous()


def clean_qmri_maps(t1: torch.Tensor, t2: torch.Tensor, clip_ms: float | None = 625.0,
                    median_plane: tuple[int, int] | None = (0, 1),
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """De-noise T1 / T2 maps as in SynthMRI section II.D.1: clip outliers, then a 3x3 in-plane median.

    Args:
        t1, t2: maps [B, C, X, Y, Z], ms.
        clip_ms: values above it are set to it (625 ms, set heuristically in the thesis); None skips.
        median_plane: the two spatial axes of the filter plane (default (0, 1), the sagittal plane
            of a sagittally stored volume); None skips the filter.
        mask: bool, broadcastable to the maps: where clipping applies. The thesis clips only the
            abdominal region without vertebrae; None clips everywhere, which also clips CSF and
            other fluids (T1 ~ 4 s), so pass a mask for whole-body maps.

    Returns:
        (t1, t2) cleaned, same shape, dtype and device.
    """
    if t1.ndim != 5 or t1.shape != t2.shape:
        raise ValueError(f"t1, t2: expected two maps [B, C, X, Y, Z] of one shape, got {tuple(t1.shape)} "
                         f"and {tuple(t2.shape)}")
    if clip_ms is not None and not (math.isfinite(clip_ms) and clip_ms > 0):
        raise ValueError(f"clip_ms: must be a positive number or None, got {clip_ms}")
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"mask: expected a bool tensor, got {mask.dtype}")
    out = []
    for m in (t1, t2):
        if clip_ms is not None:
            clipped = m.clamp_max(clip_ms)
            m = clipped if mask is None else torch.where(mask.to(m.device), clipped, m)
        if median_plane is not None:
            m = median_filter_inplane(m, tuple(median_plane))
        out.append(m)
    return out[0], out[1]


@dataclass
class QMRIMaps:
    """Maps of one batch, each [B, 1, X, Y, Z]: T1 and T2 (ms) and the two apparent PD maps (eq. 5)."""

    t1: torch.Tensor
    t2: torch.Tensor
    pd_t1w: torch.Tensor
    pd_t2w: torch.Tensor

    @classmethod
    def from_experiment(cls, t1: torch.Tensor, t2: torch.Tensor, s_t1w: torch.Tensor, s_t2w: torch.Tensor,
                        tr_t1w: Number = 436.0, te_t1w: Number = 8.0, tr_t2w: Number = 2435.0,
                        te_t2w: Number = 100.0) -> QMRIMaps:
        """Estimate both PD maps from acquired T1w / T2w TSE images (defaults: the thesis' Table I, ms)."""
        return cls(t1, t2, estimate_pd(s_t1w, t1, t2, tr_t1w, te_t1w), estimate_pd(s_t2w, t1, t2, tr_t2w, te_t2w))


@dataclass
class QMRIParams:
    """Synthetic timing per batch item: tr_s, te_s tensors [B], ms."""

    tr_s: torch.Tensor
    te_s: torch.Tensor


class QMRISynthesizer(torch.nn.Module):
    """SynthMRI: random TR_s / TE_s spin-echo contrasts from qMRI maps (thesis section II.B, Fig. 1).

    Args:
        tr: TR_s sampler, ms; default Uniform(200, 3000).
        te: TE_s sampler, ms; default Uniform(5, 100).
        te_threshold: TE_s below it uses the T1w-derived PD, else the T2w-derived PD (50 ms).
    """

    def __init__(self, tr: Sampler | float | Sequence[float] = (200.0, 3000.0),
                 te: Sampler | float | Sequence[float] = (5.0, 100.0), te_threshold: float = 50.0) -> None:
        super().__init__()
        self.tr = make_sampler(tr, "tr", min_value=1e-3)
        self.te = make_sampler(te, "te", min_value=0.0)
        if not (math.isfinite(te_threshold) and te_threshold > 0):
            raise ValueError(f"te_threshold: must be a positive number of ms, got {te_threshold}")
        self.te_threshold = float(te_threshold)

    def sample(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> QMRIParams:
        """Draw TR_s and TE_s for ``batch`` items (on ``generator``'s device, moved to ``device``)."""
        if int(batch) < 1:
            raise ValueError(f"batch: must be >= 1, got {batch}")
        return QMRIParams(self.tr.sample((batch,), generator, device), self.te.sample((batch,), generator, device))

    def apply(self, maps: QMRIMaps | Mapping[str, torch.Tensor], params: QMRIParams) -> torch.Tensor:
        """The synthetic image [B, 1, X, Y, Z] (eq. 6) for ``params``."""
        m = maps if isinstance(maps, QMRIMaps) else QMRIMaps(**maps)
        return synthesize_from_qmri(m.t1, m.t2, m.pd_t1w, m.pd_t2w, params.tr_s.to(m.t1.device),
                                    params.te_s.to(m.t1.device), self.te_threshold)

    def forward(self, maps: QMRIMaps | Mapping[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """``apply(maps, sample(B, generator, device))``."""
        m = maps if isinstance(maps, QMRIMaps) else QMRIMaps(**maps)
        return self.apply(m, self.sample(m.t1.shape[0], generator, m.t1.device))


_LAZY_EXPORTS = {"PhysicsContrast": "physics_contrast", "PhysicsParams": "physics_contrast",
                 "nominal_physics_params": "physics_contrast", "TissueParams": "tissues", "TISSUE_TABLE": "tissues",
                 "sample_tissue_parameters": "tissues", "nominal_tissue_parameters": "tissues"}


def __getattr__(name: str) -> object:  # PEP 562: physics_contrast imports this module, hence lazily
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY_EXPORTS[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
