"""The training set of generation label maps for the shipped lumbar model.

Sources (`SOURCES`), each written as ``<out>/<name>.nii.gz`` + `LabelTable` sidecar, all in
canonical RAS at the training spacing (given in RAS axis order), listed in ``<out>/manifest.json``:

- ``real``: EM/GMM maps (`labelmaps.make_labelmaps`, at native resolution) of the lumbar_mri
  cases, except `VALIDATION_CASES` (real images are for validation only). Bodies only.
- ``vb2native`` / ``ivdnative``: label-only maps (lumbar_mri/labels_only) on a random smooth
  background (`random_background_labels`); subjects of validation cases are excluded.
- ``totalseg``: the TotalSegmentator CT map (bodies, discs, posterior elements, cord).
- ``verse``: the VerSe sub-verse004 mask, bodies split from the posterior elements at the
  spinal canal's anterior wall (`source_structures.split_body_at_canal`).
- ``phantom``: `phantom.generate_phantom` with varied configurations.

Structure-only maps get a 1-voxel cortex rim (cortical_bone) around marrow for bodies and an
annulus (2-4 mm) around a nucleus for discs. Maps are deterministic for a seed: each item draws
from ``SeedSequence([seed, crc32(name)])``, whatever the number of workers. ``disc_endplate_mm``
leaves an unlabelled endplate layer between discs and bodies (`endplate_gap`).

Partial supervision: the manifest's ``has_body`` / ``has_disc`` say which classes a map labels.
Discs are unlabelled (background clusters) in real, vb2native and verse maps; bodies are random
background in ivdnative maps: the training loss should not count the missing class as background.

Geometry of the label-only maps, checked against the 1 mm cases of the same subjects and anatomy:
the headers are right about the supero-inferior axis (T11 smallest on top; L1/L2 = 255 on top)
but wrong about the antero-posterior sign (the lumbar lordosis and the anteriorly taller L4/L5,
L5/S1 discs both say the axis runs anterior -> posterior), so that axis' direction is flipped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from . import label_converters, labelmaps
from .endplate_gap import endplate_gap
from .errors import InputError
from .io import Volume, read_image, read_labels, reorient, write_bytes_atomic, write_volume
from .labels import LabelEntry, LabelTable, is_disc, is_vertebra, sidecar_path, vertebra_name
from .resampling import resample
from .source_structures import CORD, POSTERIOR, ivd_native_to_discs, split_binary_bodies, split_body_at_canal

log = logging.getLogger(__name__)

VALIDATION_CASES = ("VB2_05", "VB2_13", "VB2_18", "VB3_02", "VB3_20", "VB3_40", "IVD_11", "IVD_20", "IVD_42")
SOURCES = ("real", "vb2native", "ivdnative", "totalseg", "verse", "phantom")
_TOTALSEG = "samples/totalsegmentator_tests/spine_report_totalseg"
_VERSE = "samples/verse_sub-verse004_mask/sub-verse004_seg-vert_msk.nii.gz"
_PHANTOM_SPACINGS = ((1.5, 1.5, 1.5), (1.0, 1.0, 3.0), (1.25, 1.25, 4.0), (3.0, 1.0, 1.0), (2.0, 1.25, 1.25))


@dataclass(frozen=True)
class PrepareConfig:
    """Options of `prepare_labelmaps`. ``spacing``: mm, RAS order; ``n_maps``: maps per real case
    (EM) and per label-only / CT item (backgrounds); ``min_fov_mm``: structure-only maps are padded
    with background to this extent; ``names``: only the items so named ('VB3_03', 'VB2native_01')."""

    spacing: tuple[float, float, float] = (2.0, 1.5, 1.5)
    n_maps: int = 3
    seed: int = 0
    k_outside: tuple[int, int] = (3, 10)
    k_inside: tuple[int, int] = (2, 3)
    background_k: tuple[int, int] = (4, 10)
    smoothness_mm: tuple[float, float] = (8.0, 30.0)
    min_fov_mm: tuple[float, float, float] = (64.0, 160.0, 160.0)
    n_phantoms: int = 24
    sources: tuple[str, ...] = SOURCES
    names: tuple[str, ...] | None = None
    workers: int = 1
    disc_endplate_mm: float = 0.0  # > 0: `endplate_gap` on maps with bodies and discs

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing!r}")
        if self.n_maps < 1 or self.n_phantoms < 0 or self.workers < 1:
            raise ValueError(f"need n_maps >= 1, n_phantoms >= 0, workers >= 1; got {self}")
        if set(self.sources) - set(SOURCES):
            raise ValueError(f"unknown sources {sorted(set(self.sources) - set(SOURCES))}; known: {SOURCES}")
        if not self.disc_endplate_mm >= 0:
            raise ValueError(f"disc_endplate_mm must be >= 0, got {self.disc_endplate_mm}")


# ----------------------------------------------------------------------------- building blocks


def random_background_labels(
    shape, spacing, k=(4, 10), seed: int | np.random.Generator = 0, smoothness_mm=(8.0, 30.0)
) -> np.ndarray:
    """Partition a volume into K smooth random regions (a background without an image).

    The label of a voxel is the argmax of K smooth noise fields; each field is white noise on a
    coarse grid whose cell is its smoothness (mm, drawn log-uniformly from ``smoothness_mm``),
    blurred by one cell and upsampled trilinearly, so every label forms several blobs. K is drawn
    from ``k`` (an int or an inclusive range); ``spacing`` in mm along the array axes.

    Returns:
        int32 array of ``shape``, labels 1..K' consecutive (K' <= K: labels winning no voxel go).
    """
    rng = np.random.default_rng(seed)
    (lo, hi), (s_lo, s_hi) = (np.broadcast_to(v, 2).tolist() for v in (k, smoothness_mm))
    if not (1 <= lo <= hi and 0 < s_lo <= s_hi):
        raise ValueError(f"need 1 <= k and 0 < smoothness_mm as value or (lo, hi), got {k!r}, {smoothness_mm!r}")
    shape, spacing = tuple(int(n) for n in shape), np.asarray(spacing, float)
    best, out = np.full(shape, -np.inf, np.float32), np.zeros(shape, np.int32)
    for j in range(int(rng.integers(lo, hi + 1))):
        cell = np.exp(rng.uniform(np.log(s_lo), np.log(s_hi)))
        coarse_shape = np.maximum(2, np.ceil(np.asarray(shape) * spacing / cell).astype(int) + 2)
        coarse = ndimage.gaussian_filter(rng.standard_normal(coarse_shape), 1.0, mode="wrap")
        coarse = (coarse - coarse.mean()) / (coarse.std() or 1.0) + rng.normal(0, 0.3)
        zoom = np.asarray(shape) / coarse_shape
        field = ndimage.zoom(coarse.astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
        field = field[tuple(slice(0, n) for n in shape)]
        field = np.pad(field, [(0, n - m) for n, m in zip(shape, field.shape)], mode="edge")
        win = field > best
        best[win], out[win] = field[win], j + 1
    used = np.flatnonzero(np.bincount(out.ravel()))
    lut = np.zeros(out.max() + 1, np.int32)
    lut[used] = np.arange(1, used.size + 1)
    return lut[out]


def canonical(vol: Volume, spacing, method: str | None = None) -> Volume:
    """RAS, then ``spacing`` (RAS order): nearest, or (``method`` None) one-hot where an axis is
    upsampled more than 1.5x, for smoother structure surfaces."""
    ras, _ = reorient(vol, "RAS")
    if method is None:
        method = "onehot" if max(np.asarray(ras.spacing) / np.asarray(spacing, float)) > 1.5 else "nearest"
    return resample(ras, spacing, method)


def pad_to_fov(vol: Volume, min_fov_mm) -> Volume:
    """Pad with 0 (centred) so that the extent is at least ``min_fov_mm`` along each axis."""
    sp = np.asarray(vol.spacing)
    extra = np.maximum(0, np.ceil(np.asarray(min_fov_mm) / sp).astype(int) - np.asarray(vol.shape))
    before = extra // 2
    array = np.pad(vol.array, [(b, e - b) for b, e in zip(before, extra)])
    origin = np.asarray(vol.origin) - vol.direction @ (before * sp)
    return Volume(array, vol.spacing, tuple(origin), vol.direction.copy())


def compose_with_background(structures: Volume, rng: np.random.Generator, cfg: PrepareConfig) -> tuple[Volume, LabelTable]:
    """Random background regions (ids 1..K), then per structure a rim and a core label (own ids):
    bodies / posterior elements cortex (1 voxel) + marrow, discs annulus (2-4 mm) + nucleus."""
    out = random_background_labels(structures.shape, structures.spacing, cfg.background_k, rng, cfg.smoothness_mm)
    entries = [LabelEntry(0, "unused (padding)", "air", 0)]
    entries += [LabelEntry(j, f"background region {j}", "unknown", 0) for j in range(1, int(out.max()) + 1)]
    sp, arr = np.asarray(structures.spacing), structures.array
    boxes = ndimage.find_objects(arr)
    for code in [int(v) for v in np.unique(arr) if v]:
        if is_vertebra(code) or code == POSTERIOR:
            name = vertebra_name(code) if code != POSTERIOR else "posterior elements"
            parts, rim_mm = ((f"{name} cortex", "cortical_bone"), (f"{name} marrow", "marrow")), float(sp.max())
        elif is_disc(code):
            name = vertebra_name(code)
            parts, rim_mm = ((f"{name} annulus", "annulus"), (f"{name} nucleus", "nucleus")), rng.uniform(2.0, 4.0)
        else:
            parts, rim_mm = (("spinal cord", "cord"),), np.inf
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in boxes[code - 1])
        mask = arr[box] == code
        dist = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
        target = code if is_vertebra(code) or is_disc(code) else 0
        for (pname, tissue), part in zip(parts, (mask & (dist <= rim_mm), mask & (dist > rim_mm))):
            if part.any():
                out[box][part] = len(entries)
                entries.append(LabelEntry(len(entries), pname, tissue, target))
    return structures.with_array(out), LabelTable(tuple(entries))


def _flip_axis(vol: Volume, axis: int) -> Volume:
    direction = vol.direction.copy()
    direction[:, axis] *= -1
    return Volume(vol.array, vol.spacing, vol.origin, direction)


# ----------------------------------------------------------------------------- one item per job


def _subject_case(stem: str) -> str:
    prefix, number = stem.split("_")[:2]
    return prefix.replace("native", "") + "_" + number


def _item_maps(source: str, name: str, arg: str, shared: Path, cfg: PrepareConfig, rng: np.random.Generator):
    """The (Volume, LabelTable) maps of one item, on the canonical training grid."""
    if source == "real":
        image, labels = read_image(shared / "lumbar_mri/images" / f"{name}_img.nii.gz"), read_labels(arg)
        cases = json.loads((shared / "lumbar_mri/cases.json").read_text())
        labels = labels.with_array(label_converters.from_reference_case(labels.array, name, cases))
        maps = labelmaps.make_labelmaps(image, labels, n_maps=cfg.n_maps, k_outside=cfg.k_outside,
                                        k_inside=cfg.k_inside, seed=int(rng.integers(2**31)))
        return [(canonical(v, cfg.spacing, "nearest"), t) for v, t in maps]
    if source == "phantom":
        from .phantom import PhantomConfig, generate_phantom

        top = str(rng.choice(["L1", "T11", "T10"], p=[0.5, 0.3, 0.2]))
        sp = _PHANTOM_SPACINGS[int(rng.integers(len(_PHANTOM_SPACINGS)))]
        fov = ({"L1": 250.0, "T11": 310.0, "T10": 340.0}[top], rng.uniform(170, 200), rng.uniform(96, 130))
        pcfg = PhantomConfig(shape=tuple(round(f / s) for f, s in zip(fov, sp)), spacing=sp, top_level=top,
                             n_lumbar=6 if rng.random() < 0.15 else 5)
        vol, table = generate_phantom(pcfg, seed=int(rng.integers(2**31)))
        return [(canonical(vol, cfg.spacing, "nearest"), table)]
    if source == "vb2native":
        structures = split_binary_bodies(_flip_axis(read_labels(arg), 1))
        if structures is None:
            return []
    elif source == "ivdnative":
        vol = _flip_axis(read_labels(arg), 0)
        structures = vol.with_array(ivd_native_to_discs(vol.array))
    elif source == "totalseg":
        structures = _totalseg_structures(shared / f"{_TOTALSEG}.nii.gz", shared / f"{_TOTALSEG}_vertebrae_body.nii.gz")
    else:  # verse
        vol, _ = reorient(read_labels(arg), "RAS")
        structures = vol.with_array(split_body_at_canal(label_converters.from_verse(vol.array), vol.spacing))
    structures = pad_to_fov(canonical(structures, cfg.spacing), cfg.min_fov_mm)
    return [compose_with_background(structures, rng, cfg) for _ in range(cfg.n_maps)]


def _totalseg_structures(total_path: Path, split_path: Path) -> Volume:
    """Bodies (split class 1, id from the 'total' map), discs (class 2: each component -> the
    body above it by world height), posterior elements (other vertebra voxels), cord (79)."""
    total, split = read_labels(total_path), read_labels(split_path)
    vert = label_converters.from_totalsegmentator(total.array, "total")
    near = ndimage.distance_transform_edt(vert == 0, return_distances=True, return_indices=True)
    nearest = vert[tuple(near[1])]
    out = np.where(vert > 0, POSTERIOR, 0).astype(np.int32)
    out[total.array == 79] = CORD
    body = (split.array == 1) & (near[0] <= 2)
    out[body] = nearest[body]

    def height(idx) -> np.ndarray:  # world S coordinate (LPS z) of voxel indices
        return (total.affine[:3, :3] @ np.asarray(idx, float).T + total.affine[:3, 3:])[2]

    ids = [int(v) for v in np.unique(out[body])]
    body_s = dict(zip(ids, height(ndimage.center_of_mass(body, out, ids))))
    lab, n = ndimage.label(split.array == 2)
    for i, s in enumerate(height(ndimage.center_of_mass(split.array == 2, lab, range(1, n + 1))), start=1):
        above = [v for v in ids if body_s[v] > s]
        out[lab == i] = 100 + min(above, key=lambda v: body_s[v]) if above else 0  # no body above: background
    return total.with_array(out)


def _run_item(job: tuple[str, str, str], shared: Path, out: Path, cfg: PrepareConfig) -> list[dict]:
    source, name, arg = job
    started = time.perf_counter()
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, zlib.crc32(name.encode())]))
    try:
        maps = [endplate_gap(v, t, cfg.disc_endplate_mm) for v, t in _item_maps(source, name, arg, shared, cfg, rng)]
    except (InputError, ValueError, OSError) as err:
        log.warning("%s %s skipped: %s", source, name, err)
        return []
    suffix = {"real": "em", "phantom": None}.get(source, "bg")
    entries = []
    for i, (vol, table) in enumerate(maps):
        stem = f"{name}_{suffix}{i}" if suffix else name
        entries.append(_write(vol, table, out, stem, source, {"source": source, "item": name, "input": arg, "map_index": i}))
    log.info("%-9s %-22s %d map(s) in %.1f s", source, name, len(entries), time.perf_counter() - started)
    return entries


def _write(vol: Volume, table: LabelTable, out: Path, stem: str, source: str, provenance: dict) -> dict:
    path = out / f"{stem}.nii.gz"
    dtype = np.uint8 if vol.array.max() < 256 else np.uint16
    write_volume(vol.with_array(vol.array.astype(dtype)), path)
    data = {**json.loads(table.to_json()), "provenance": provenance}
    write_bytes_atomic(json.dumps(data, indent=1).encode(), sidecar_path(path))
    targets = [int(t) for t in np.flatnonzero(np.bincount(table.target_lut()[vol.array].ravel())) if t]
    return {"name": stem, "path": path.name, "source": source, "has_body": any(map(is_vertebra, targets)),
            "has_disc": any(map(is_disc, targets)), "targets": targets, "shape": list(vol.shape),
            "spacing": [round(s, 6) for s in vol.spacing]}


# ----------------------------------------------------------------------------- the whole set


def list_items(shared: str | os.PathLike, cfg: PrepareConfig) -> list[tuple[str, str, str]]:
    """The (source, name, input path) jobs found under ``shared`` (never a validation subject)."""
    shared, jobs = Path(shared), []
    if "real" in cfg.sources and (shared / "lumbar_mri/cases.json").is_file():
        for case in sorted(json.loads((shared / "lumbar_mri/cases.json").read_text())):
            seg = shared / "lumbar_mri/labels" / f"{case}_seg.nii.gz"
            if case not in VALIDATION_CASES and seg.is_file():
                jobs.append(("real", case, str(seg)))
    for source, pattern in (("vb2native", "VB2native_*_seg.nii*"), ("ivdnative", "IVDnative_*_seg.nii*")):
        if source in cfg.sources:
            for path in sorted((shared / "lumbar_mri/labels_only").glob(pattern)):
                stem = "_".join(path.name.split("_")[:2])
                if _subject_case(stem) not in VALIDATION_CASES:
                    jobs.append((source, stem, str(path)))
    if "totalseg" in cfg.sources and (shared / f"{_TOTALSEG}_vertebrae_body.nii.gz").is_file():
        jobs.append(("totalseg", "totalseg_spine_report", str(shared / f"{_TOTALSEG}.nii.gz")))
    if "verse" in cfg.sources and (shared / _VERSE).is_file():
        jobs.append(("verse", "verse004", str(shared / _VERSE)))
    if "phantom" in cfg.sources:
        jobs += [("phantom", f"phantom_{i:03d}", "") for i in range(cfg.n_phantoms)]
    if cfg.names is not None:
        jobs = [j for j in jobs if j[1] in cfg.names]
    return jobs


def prepare_labelmaps(shared: str | os.PathLike, out: str | os.PathLike, cfg: PrepareConfig = PrepareConfig()) -> list[dict]:
    """Build every map and write ``<out>/manifest.json``; returns the manifest's map entries."""
    shared, out = Path(shared), Path(out)
    if not shared.is_dir() and set(cfg.sources) != {"phantom"}:
        raise InputError("shared data folder not found", str(shared))
    jobs = list_items(shared, cfg)
    for source in sorted(set(cfg.sources) - {j[0] for j in jobs}):
        log.warning("source %r: no items found under %s", source, shared)
    if not jobs:
        raise InputError("no training items found (check the shared data folder and the sources)", str(shared))
    out.mkdir(parents=True, exist_ok=True)
    log.info("%d items -> %s (%d worker(s))", len(jobs), out, cfg.workers)
    if cfg.workers > 1:
        # spawn, not fork: a fork after OpenMP/BLAS threads started (EM fits) can deadlock the child
        with ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(partial(_run_item, shared=shared, out=out, cfg=cfg), jobs))
    else:
        results = [_run_item(job, shared, out, cfg) for job in jobs]
    entries = [e for r in results for e in r]
    manifest = {"format": "spinesynthseg-training-maps/1", "spacing": list(cfg.spacing), "orientation": "RAS",
                "seed": cfg.seed, "disc_endplate_mm": cfg.disc_endplate_mm, "validation_cases": list(VALIDATION_CASES),
                "maps": entries}
    write_bytes_atomic(json.dumps(manifest, indent=1).encode(), out / "manifest.json")
    return entries


def read_manifest(out: str | os.PathLike) -> dict:
    """``<out>/manifest.json`` as a dict with a ``maps`` list (an old list-only manifest is wrapped).

    Raises:
        InputError: the file is missing or is not a manifest (the error names the file).
    """
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise InputError("manifest not found (run Training/prepare_labelmaps.py)", str(path))
    try:
        manifest = json.loads(path.read_text())
        if isinstance(manifest, list):
            manifest = {"maps": manifest}
        if not isinstance(manifest.get("maps"), list) or not all(isinstance(m, dict) and "path" in m for m in manifest["maps"]):
            raise ValueError("'maps' must be a list of entries with a 'path'")
    except (ValueError, AttributeError) as err:
        raise InputError(f"invalid manifest: {err}", str(path)) from err
    return manifest


def load_manifest(out: str | os.PathLike) -> list[dict]:
    """Map entries of ``<out>/manifest.json`` with absolute ``path`` and ``sidecar`` paths."""
    maps = read_manifest(out)["maps"]
    for m in maps:
        m["path"] = str((Path(out) / m["path"]).resolve())
        m["sidecar"] = str(sidecar_path(m["path"]))
    return maps
