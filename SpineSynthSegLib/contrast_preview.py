"""The Slicer module's synthetic-contrast preview, computed without MRML.

`contrast_preview` synthesizes an image from a generation label map with `synthesis.pipeline`
(domain randomization, or the signal equations of `synthesis.physics` with one fixed sequence and
timing from `PreviewSettings`); `qmri_preview` computes a sequence's image from quantitative T1,
T2 and PD maps. Both return a `Volume` on the input's exact grid; torch is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .io import Volume, reorient
from .labels import LabelEntry, LabelTable, is_disc, is_vertebra, vertebra_name


@dataclass(frozen=True)
class PreviewSettings:
    """The contrast-preview panel's settings.

    Attributes:
        mode: 'random' (domain randomization) or 'physics' (signal equations).
        sequence: one of `synthesis.physics_contrast.SEQUENCES` ('spin_echo', 'inversion_recovery',
            'spoiled_gre', 'water_fat').
        field_strength: T (1.5-3). tr, te, ti: ms. flip_deg: degrees.
        seed: random seed (tissue values, textures and, with ``full_chain``, the augmentation).
        full_chain: apply the whole augmentation chain (deformation, bias, gamma, resolution,
            noise), else the contrast only.
    """

    mode: str = "physics"
    sequence: str = "spin_echo"
    field_strength: float = 1.5
    tr: float = 500.0
    te: float = 15.0
    ti: float = 150.0
    flip_deg: float = 90.0
    seed: int = 0
    full_chain: bool = False


def default_label_table(array: np.ndarray) -> LabelTable:
    """A table for a label map without one: vertebrae -> 'marrow' targets, discs -> 'nucleus'."""
    entries = []
    for lab in (int(v) for v in np.unique(array)):
        if is_vertebra(lab):
            entries.append(LabelEntry(lab, vertebra_name(lab), "marrow", lab))
        elif is_disc(lab):
            entries.append(LabelEntry(lab, vertebra_name(lab), "nucleus", lab))
        else:
            entries.append(LabelEntry(lab, "background" if lab == 0 else f"label {lab}", "unknown"))
    return LabelTable(tuple(entries))


def _fixed_physics(s: PreviewSettings):
    """A `PhysicsContrast` drawing only the chosen sequence with the chosen timing."""
    import torch

    from .synthesis.physics import fat_null_ti
    from .synthesis.physics_contrast import SEQUENCES, PhysicsContrast
    from .synthesis.tissues import nominal_fat_t1

    if s.sequence not in SEQUENCES:
        raise InputError(f"sequence must be one of {SEQUENCES}, got {s.sequence!r}")
    b0 = float(s.field_strength)
    null = float(fat_null_ti(torch.tensor(float(s.tr)), nominal_fat_t1(torch.tensor(b0))))
    jitter = min(max(float(s.ti) / max(null, 1e-3) - 1.0, -0.9), 2.0)
    return PhysicsContrast(
        field_strength=b0, sequence_weights={s.sequence: 1.0}, se_tr=s.tr, se_te=s.te, ir_tr=s.tr, ir_te=s.te,
        ir_ti_jitter=jitter, gre_tr=s.tr, gre_te=s.te, gre_flip=s.flip_deg, wf_tr=max(s.tr, 5.8),
        wf_flip=s.flip_deg, std_fraction=0.03, label_jitter=0.0,
    )


def contrast_preview(labels: Volume, table: LabelTable | None = None, settings: PreviewSettings = PreviewSettings(),
                     config=None) -> Volume:
    """A synthetic image from a generation label map, on the label map's grid.

    Args:
        labels: generation label map (any orientation).
        table: its label table (tissues for the physics mode); default `default_label_table`.
        settings: mode, sequence and timing, seed, contrast only or the full chain.
        config: base `SynthesisConfig` (default: the library's defaults).

    Returns:
        float32 image in [0, 1] with the label map's exact geometry.
    """
    import torch

    from .synthesis.pipeline import LabelBatch, SynthesisConfig, SynthesisPipeline
    from .synthesis.sampling import make_generator

    if settings.mode not in ("random", "physics"):
        raise InputError(f"preview mode must be 'random' or 'physics', got {settings.mode!r}")
    table = table or default_label_table(labels.array)
    config = (config or SynthesisConfig()).replace(mode=settings.mode)
    if not settings.full_chain:
        config = config.replace(deform=False, bias=False, gamma=False, resolution=False, noise=False)
    ras, reo = reorient(labels, "RAS")
    pipeline = SynthesisPipeline(config)
    if settings.mode == "physics":
        pipeline.physics = _fixed_physics(settings)
    batch = LabelBatch.from_array(ras.array, table, ras.spacing)
    with torch.no_grad():
        syn = pipeline(batch, make_generator(int(settings.seed)))
    image = syn.image[0, 0].cpu().numpy().astype(np.float32)
    return reo.undo(ras.with_array(image))


def qmri_preview(t1: Volume, t2: Volume, pd: Volume, settings: PreviewSettings = PreviewSettings()) -> Volume:
    """A synthetic image from quantitative maps (T1, T2 in ms; PD) with the chosen sequence.

    Spoiled GRE uses T2 in place of T2*; the water-fat sequence needs fat maps and is refused.
    Returns a float32 image on the T1 map's grid, normalised to [0, 1].
    """
    import torch

    from .io import check_same_geometry
    from .synthesis.intensity import robust_normalize
    from .synthesis.physics import inversion_recovery, spin_echo, spoiled_gradient_echo

    check_same_geometry(t2, t1, "T2 map", "T1 map")
    check_same_geometry(pd, t1, "PD map", "T1 map")
    a, b, p = (torch.from_numpy(np.asarray(v.array, np.float32)) for v in (t1, t2, pd))
    if settings.sequence == "spin_echo":
        signal = spin_echo(p, a, b, settings.tr, settings.te)
    elif settings.sequence == "inversion_recovery":
        signal = inversion_recovery(p, a, b, settings.tr, settings.te, settings.ti)
    elif settings.sequence == "spoiled_gre":
        signal = spoiled_gradient_echo(p, a, b, settings.tr, settings.te, settings.flip_deg)
    else:
        raise InputError(f"sequence {settings.sequence!r} needs fat maps; use spin_echo, inversion_recovery "
                         "or spoiled_gre with T1/T2/PD maps")
    image = robust_normalize(signal[None, None].clamp_min(0))[0, 0]
    return t1.with_array(image.numpy().astype(np.float32))
