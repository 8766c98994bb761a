"""Training-time data: label maps in memory, synthetic batches, and real validation cases.

Label maps are loaded once (canonical RAS at the training spacing, as `Training/prepare_labelmaps.py`
writes them). Each map carries the semantic classes it labels (body, disc) and a loss-weight map
that is 0 outside its labelled superior-inferior span: real images show more vertebrae than are
labelled, and an unlabelled T10 or S1 must not be taught as background.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .absent_class import derived_disc_supervision
from .case_scoring import labelled_span_mask
from .io import read_image, read_labels, reorient
from .labels import DISC_OFFSET, SEMANTIC_IDS, VERTEBRA_NAMES, LabelEntry, LabelTable, sidecar_path
from .synthesis.pipeline import LabelBatch, SynthesisPipeline
from .training_data import read_manifest

log = logging.getLogger(__name__)

N_CLASSES = 3  # background, vertebral body, disc
ABSENT_CLASS_MODES = ("marginal", "derived")


def semantic_lut(max_id: int = 256) -> np.ndarray:
    """Output label id -> semantic class (1 vertebral body, 2 disc, 0 otherwise)."""
    lut = np.zeros(max_id, np.int64)
    for vid in VERTEBRA_NAMES:
        lut[vid] = 1
        if DISC_OFFSET + vid < max_id:
            lut[DISC_OFFSET + vid] = 2
    return lut


def span_weight(targets: np.ndarray, si_axis: int = 2, full: bool = False) -> np.ndarray:
    """1 inside the labelled superior-inferior span (`case_scoring.labelled_span`), else 0.

    Outside it an unlabelled vertebra is not taught as background; ``full``: 1 everywhere.
    """
    if full:
        return np.ones(targets.shape, np.float32)
    return labelled_span_mask(targets, si_axis).astype(np.float32)


@dataclass
class TrainingMap:
    name: str
    source: str
    batch: LabelBatch  # B = 1, semantic targets per compact label
    weight: torch.Tensor  # [1, 1, X, Y, Z]
    labelled: torch.Tensor  # [1, C] bool
    derived: torch.Tensor  # [1, C] bool: classes taught by their absence (absent_class.py)
    unknown: torch.Tensor | None = None  # [1, 1, X, Y, Z]: where the derived classes stay marginal


def map_file(folder: Path, entry: dict) -> Path:
    """The file of a manifest entry: its absolute path, or its file name inside ``folder``."""
    path = Path(entry["path"])
    return path if path.is_absolute() else Path(folder) / path.name


def load_training_maps(folder: str | Path, spacing, full_span_sources=("phantom", "vb2native", "ivdnative"),
                       absent_class: str = "marginal", disc_sources: tuple[str, ...] | None = None,
                       manifest: dict | None = None, body_sources: tuple[str, ...] | None = None) -> list[TrainingMap]:
    """Load every map listed in ``folder/manifest.json``; checks the spacing matches.

    Maps whose source is in ``full_span_sources`` hold no unlabelled anatomy (phantoms, label-only
    masks on random backgrounds), so their loss covers the whole map; maps made from real or CT
    images are restricted to their labelled span. ``absent_class``: 'marginal' leaves a class a
    map does not label to the marginal loss; 'derived' supervises it where its absence is known
    (`absent_class.derived_disc_supervision`). ``disc_sources``: the sources whose disc labels teach
    the disc class (None: all); elsewhere discs stay generation labels, drawn but not taught, as
    in the body-only maps (sources draw discs differently: `Training/label_geometry.py`).
    ``body_sources``: the same for the vertebral-body class.
    ``manifest``: the folder's manifest when the caller has read it already (`read_manifest`).
    """
    if absent_class not in ABSENT_CLASS_MODES:
        raise ValueError(f"absent_class must be one of {ABSENT_CLASS_MODES}, got {absent_class!r}")
    folder = Path(folder)
    entries = (manifest if manifest is not None else read_manifest(folder))["maps"]
    lut = semantic_lut()
    present = {e.get("source") for e in entries}
    for kind, chosen in (("disc", disc_sources), ("body", body_sources)):
        unknown_sources = sorted(set(chosen or ()) - present)
        if unknown_sources:
            raise ValueError(f"{kind} sources {unknown_sources} are not in {folder / 'manifest.json'} "
                             f"(sources: {sorted(present)})")
    maps = []
    for e in entries:
        path = map_file(folder, e)
        vol = read_labels(path)
        if not np.allclose(vol.spacing, spacing, atol=1e-3):
            raise ValueError(f"{path}: spacing {vol.spacing} differs from the training spacing {spacing}")
        table = LabelTable.load(sidecar_path(path))
        teach_discs = bool(e.get("has_disc")) and (disc_sources is None or e.get("source") in disc_sources)
        teach_bodies = bool(e.get("has_body")) and (body_sources is None or e.get("source") in body_sources)
        untaught = {c for c, taught in ((SEMANTIC_IDS["disc"], teach_discs), (SEMANTIC_IDS["vertebral_body"], teach_bodies)) if not taught}
        sem = {x.id: int(lut[x.target]) for x in table.entries}
        sem = {k: 0 if v in untaught else v for k, v in sem.items()}
        sem_table = LabelTable(tuple(LabelEntry(x.id, x.name, x.tissue, sem[x.id]) for x in table.entries))
        lb = LabelBatch.from_array(vol.array, sem_table, vol.spacing, str(path))  # an error names the map
        targets = table.target_map(vol.array)
        weight = span_weight(targets, full=e.get("source") in full_span_sources)
        flags = [True, teach_bodies, teach_discs]
        derived, unknown = [False] * N_CLASSES, None
        if absent_class == "derived":
            derived, unknown = derived_disc_supervision(e.get("source", "unknown"), targets, flags)
        maps.append(TrainingMap(e.get("name", path.stem), e.get("source", "unknown"), lb, torch.from_numpy(weight)[None, None],
                                torch.tensor([flags]), torch.tensor([derived]),
                                None if unknown is None else torch.from_numpy(unknown.astype(np.float32))[None, None]))
    log.info("loaded %d training maps from %s", len(maps), folder)
    return maps


def sampling_weights(maps: list[TrainingMap], source_weights: dict[str, float] | None) -> torch.Tensor:
    """Per-map probabilities: each source gets its weight, shared evenly by its maps.

    Sources missing from ``source_weights`` get weight 0; with no weights every map is equal.
    """
    if not source_weights:
        return torch.full((len(maps),), 1.0 / len(maps))
    counts: dict[str, int] = {}
    for m in maps:
        counts[m.source] = counts.get(m.source, 0) + 1
    w = torch.tensor([float(source_weights.get(m.source, 0.0)) / counts[m.source] for m in maps], dtype=torch.float64)
    if w.sum() <= 0:
        raise ValueError(f"source_weights {source_weights} select none of the sources {sorted(counts)}")
    return (w / w.sum()).float()


def synth_batch(maps: list[TrainingMap], pipeline: SynthesisPipeline, batch_size: int, patch, generator: torch.Generator, device,
                probabilities: torch.Tensor | None = None, render_together: bool = False) -> SynthBatch:
    """Draw ``batch_size`` maps and synthesize one patch from each (`SynthBatch`).

    Maps differ in shape, so each is deformed and cropped to ``patch`` on its own. With
    ``render_together`` the rest of the chain then runs once for the whole batch (one set of kernel
    launches per stage, for GPUs; on a CPU it is slower, `spinesynthseg bench synth-batch`); by
    default each map goes through the whole pipeline in turn. The two draw different random
    streams from one seed."""
    if probabilities is None:
        probabilities = torch.full((len(maps),), 1.0 / len(maps))
    u = torch.rand((batch_size,), generator=generator, device=generator.device).cpu()
    idx = torch.searchsorted(torch.cumsum(probabilities.double(), 0), u.double()).clamp(max=len(maps) - 1).tolist()
    # the unknown mask travels as a second aux channel only when a drawn map has one (derived mode)
    carry = any(maps[i].unknown is not None for i in idx)
    sources = []
    for i in idx:
        m = maps[i]
        extra = [torch.zeros_like(m.weight) if m.unknown is None else m.unknown] if carry else []
        sources.append((m.batch.to(device), torch.cat([m.weight, *extra], 1).to(device)))
    if render_together:
        deformed = [pipeline.deform(src, generator, out_shape=patch, aux=a) for src, a in sources]
        stacked = LabelBatch.stack([LabelBatch(lab, src.tissues, src.targets, src.spacing) for (lab, _), (src, _) in zip(deformed, sources)])
        outs = [pipeline.render(stacked, generator, aux=torch.cat([a for _, a in deformed]))]
    else:
        outs = [pipeline(src, generator, out_shape=patch, aux=a) for src, a in sources]
    image, target, aux = (torch.cat([getattr(o, k) for o in outs]) for k in ("image", "target", "aux"))
    labelled = torch.cat([maps[i].labelled for i in idx]).to(device)
    derived = torch.cat([maps[i].derived for i in idx]).to(device)
    return SynthBatch(image, target, aux[:, :1], labelled, derived, aux[:, 1:] if carry else None)


@dataclass
class SynthBatch:
    """One training batch: images [B, 1, ...], targets [B, 1, ...] (classes), loss weights
    [B, 1, ...], labelled and derived classes [B, C] and the unknown mask [B, 1, ...] (losses.py;
    None when no drawn map has one)."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    labelled: torch.Tensor
    derived: torch.Tensor
    unknown: torch.Tensor | None


@dataclass
class ValidationCase:
    name: str
    group: str
    image: torch.Tensor  # [1, 1, X, Y, Z] normalised, RAS at the training spacing
    semantic: np.ndarray  # [X, Y, Z] 0/1/2
    weight: np.ndarray  # labelled span
    labelled_class: int  # 1 bodies, 2 discs


def load_validation_cases(shared: str | Path, cases: list[str], spacing, patch_size) -> list[ValidationCase]:
    """Real labelled images (validation only), preprocessed exactly as inference does."""
    from .inference import preprocess
    from .label_converters import from_reference_case
    from .model import ModelMeta
    from .resampling import resample_to

    shared = Path(shared)
    info = json.loads((shared / "lumbar_mri" / "cases.json").read_text())
    meta = ModelMeta(spacing=tuple(spacing), patch_size=tuple(patch_size))
    out = []
    lut = semantic_lut()
    for case in cases:
        img = read_image(shared / "lumbar_mri" / "images" / f"{case}_img.nii.gz")
        lab = read_labels(shared / "lumbar_mri" / "labels" / f"{case}_seg.nii.gz")
        lab = lab.with_array(from_reference_case(lab.array, case, info))
        tensor, ctx = preprocess(img, meta)
        ids = resample_to(reorient(lab, "RAS")[0], ctx.net_grid, "nearest").array
        ids = np.pad(ids, ctx.pad)
        cls = 2 if case.startswith("IVD") else 1
        out.append(ValidationCase(case, case.split("_")[0], tensor, lut[ids], span_weight(ids), cls))
    return out
