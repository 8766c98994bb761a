"""Per-label physics contrasts: `PhysicsContrast` draws a sequence and its timing.

It turns tissue ids [B, K] into per-label (means, stds) [B, K] from a random sequence (spin echo,
STIR, spoiled GRE, Dixon water-fat) using the signal equations of `physics.py` and the tissue
table of `tissues.py`, so it can replace the per-label Gaussian means of the domain-randomization
mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .physics import DIXON_OUTPUTS, dixon_echo_times, fat_null_ti, inversion_recovery, spin_echo, water_fat_gre
from .sampling import Choice, LogUniform, Sampler, make_sampler
from .tissues import TissueParams, nominal_fat_t1, nominal_tissue_parameters, sample_tissue_parameters


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
