"""Generation label maps from real images by intensity clustering (EM on a Gaussian mixture).

After Billot et al. (SynthSeg, Med Image Anal 2023) and seed 000, section II.D.2: the labelled
structures are kept, everything outside them is split into K_out intensity clusters (several maps
per case, K_out drawn from a range, 3-10 in the seed), and the voxels inside the structures into
K_in clusters (2-3 in the seed: cortex, marrow, marrow hyperintensities), fitted per structure
class (all vertebrae together, all discs together). Mixtures are fitted by EM
(`sklearn.mixture.GaussianMixture`) on at most `MAX_FIT_VOXELS` random voxels, then every voxel
is assigned to its most probable component.

Generation ids: 0 is never written (an entry 'unused (padding)' with tissue 'air' stays in the
table so padded deformations remain describable); 1..K_out are the outside clusters, darkest
first; then each structure's sub-clusters, structures by ascending output label, sub-clusters
darkest first. Clusters that receive no voxel are dropped and the ids kept consecutive. Every
sub-cluster of a structure has that structure's output label as its target.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture

from . import label_converters
from .errors import InputError
from .io import Volume, check_image, check_same_geometry, read_image, read_labels, write_bytes_atomic, write_volume
from .labels import LabelEntry, LabelTable, is_disc, is_vertebra, sidecar_path, vertebra_name

log = logging.getLogger(__name__)

MAX_FIT_VOXELS = 200_000
DEFAULT_TISSUE = {"vertebra": "marrow", "disc": "nucleus", "other": "unknown"}
_GROUPS = ("vertebra", "disc", "other")


def _k_range(value: int | tuple[int, int], name: str, minimum: int) -> tuple[int, int]:
    lo, hi = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if int(lo) != lo or int(hi) != hi or not minimum <= lo <= hi:
        raise InputError(f"must be an integer or (lo, hi) range with {minimum} <= lo <= hi, got {value!r}", name)
    return int(lo), int(hi)


def _group(label: int) -> str:
    return "vertebra" if is_vertebra(label) else "disc" if is_disc(label) else "other"


def _name(label: int) -> str:
    return vertebra_name(label) if is_vertebra(label) or is_disc(label) else f"label {label}"


def _draw_k(rng: np.random.Generator, lo: int, hi: int, n: int) -> list[int]:
    """n values from lo..hi, all different while the range allows (a shuffled cycle)."""
    values = rng.permutation(np.arange(lo, hi + 1))
    return [int(values[i % len(values)]) for i in range(n)]


class _Clusterer:
    """Fits 1D mixtures on voxel subsets; assigns via the distinct intensities (exact, fast)."""

    def __init__(self, image: np.ndarray) -> None:
        flat = image.ravel()
        self.unique, self.inverse = np.unique(flat, return_inverse=True)
        self.inverse = self.inverse.ravel()
        scale = float(flat.std()) or 1.0
        self.z = ((self.unique - float(flat.mean())) / scale).astype(np.float64)

    def cluster(self, index: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """Cluster the voxels at flat ``index``: labels 0..k'-1 by ascending mean, k' <= k."""
        codes = self.inverse[index]
        sample = codes if codes.size <= MAX_FIT_VOXELS else codes[rng.integers(0, codes.size, MAX_FIT_VOXELS)]
        k = max(1, min(k, np.unique(sample).size))
        gmm = GaussianMixture(k, reg_covar=1e-4, max_iter=200, random_state=int(rng.integers(2**31 - 1)))
        gmm.fit(self.z[sample][:, None])
        assign = gmm.predict(self.z[:, None])[codes]
        counts = np.bincount(assign, minlength=k)
        means = np.bincount(assign, weights=self.z[codes], minlength=k) / np.maximum(counts, 1)
        used = np.flatnonzero(counts)
        rank = np.zeros(k, np.int64)
        rank[used[np.argsort(means[used], kind="stable")]] = np.arange(used.size)
        return rank[assign]


def _check(image: Volume, labels: Volume) -> None:
    check_same_geometry(labels, image, "labels", "image")
    check_image(image, "image")
    if not (labels.array > 0).any():
        raise InputError("label map has no structure (every voxel is 0)", "labels")
    if labels.array.min() < 0:
        raise InputError("label map has negative labels", "labels")


def make_labelmaps(
    image: Volume,
    labels: Volume,
    *,
    n_maps: int = 4,
    k_outside: int | tuple[int, int] = (3, 10),
    k_inside: int | tuple[int, int] = (2, 3),
    seed: int = 0,
    structure_tissues: Mapping[int, str] | None = None,
    target_of: Mapping[int, int] | None = None,
) -> list[tuple[Volume, LabelTable]]:
    """Cluster a real image into ``n_maps`` generation label maps around its labelled structures.

    Args:
        image: intensity volume.
        labels: structures (> 0) on the image's grid, already in the output convention
            (`label_converters`); 0 = everything else.
        n_maps: number of maps; K_out differs between maps while the range allows.
        k_outside: K_out, or its inclusive range, for the voxels outside the structures.
        k_inside: K_in, or its range, drawn per map and structure class (vertebrae, discs, other).
        seed: the same seed gives the same maps.
        structure_tissues: tissue (`labels.TISSUES`) per output label; default marrow for
            vertebrae, nucleus for discs, unknown otherwise.
        target_of: output label per structure label (default: the label itself).

    Returns:
        ``n_maps`` pairs (int32 generation map on the image grid, its `LabelTable`).

    Raises:
        InputError: mismatched geometry, an empty label map, a constant or non-finite image, or a
            bad parameter (named).
    """
    _check(image, labels)
    if int(n_maps) != n_maps or n_maps < 1:
        raise InputError(f"must be a positive integer, got {n_maps!r}", "n_maps")
    k_out_range = _k_range(k_outside, "k_outside", 1)
    k_in_range = _k_range(k_inside, "k_inside", 1)
    structure_tissues = dict(structure_tissues or {})
    target_of = dict(target_of or {})

    lab = labels.array.ravel()
    structures = [int(v) for v in np.unique(lab) if v > 0]
    targets = {s: int(target_of.get(s, s)) for s in structures}
    groups = {g: [s for s in structures if _group(targets[s]) == g] for g in _GROUPS}
    outside = np.flatnonzero(lab == 0)
    inside = {g: np.flatnonzero(np.isin(lab, members)) for g, members in groups.items() if members}

    rng = np.random.default_rng(seed)
    clusterer = _Clusterer(image.array.astype(np.float32))
    maps = []
    for k_out in _draw_k(rng, *k_out_range, int(n_maps)):
        k_in = {g: int(rng.integers(k_in_range[0], k_in_range[1] + 1)) for g in inside}
        maps.append(_one_map(labels, lab, outside, inside, k_out, k_in, clusterer, rng, targets, structure_tissues))
    return maps


def _one_map(
    labels: Volume,
    lab: np.ndarray,
    outside: np.ndarray,
    inside: dict[str, np.ndarray],
    k_out: int,
    k_in: dict[str, int],
    clusterer: _Clusterer,
    rng: np.random.Generator,
    targets: dict[int, int],
    tissues: Mapping[int, str],
) -> tuple[Volume, LabelTable]:
    """One generation map: outside clusters 1..K_out, then each structure's sub-clusters."""
    out = np.zeros(lab.size, np.int32)
    entries = [LabelEntry(0, "unused (padding)", "air", 0)]
    if outside.size:
        assign = clusterer.cluster(outside, k_out, rng)
        out[outside] = assign + 1
        entries += [LabelEntry(j, f"outside cluster {j}", "unknown", 0) for j in range(1, int(assign.max()) + 2)]
    next_id = len(entries)
    combos: dict[tuple[int, int], np.ndarray] = {}
    for group, index in inside.items():
        assign = clusterer.cluster(index, k_in[group], rng)
        for s in sorted(set(lab[index].tolist())):
            sel = lab[index] == s
            for c in np.unique(assign[sel]).tolist():
                combos[(s, c)] = index[sel][assign[sel] == c]
    for (s, c), where in sorted(combos.items()):
        target = targets[s]
        tissue = tissues.get(target, DEFAULT_TISSUE[_group(target)])
        out[where] = next_id
        entries.append(LabelEntry(next_id, f"{_name(target)} cluster {c + 1}", tissue, target))
        next_id += 1
    return labels.with_array(out.reshape(labels.shape)), LabelTable(tuple(entries))


def outside_cluster_count(table: LabelTable) -> int:
    """Number of outside clusters (generation-only labels other than 0) in a table."""
    return sum(1 for e in table.entries if e.id and not e.target)


def write_labelmaps(
    maps: list[tuple[Volume, LabelTable]], out: str | os.PathLike, stem: str, *, provenance: Mapping | None = None
) -> list[Path]:
    """Write ``{stem}_k{K}_{i}.nii.gz`` and its JSON sidecar per map; returns the map paths.

    The sidecar is the `LabelTable` JSON plus a ``provenance`` key (``provenance`` given here,
    the map index, K_out and K_in per structure as used). Every file is written atomically; if a
    write fails, the files already written by this call are removed.
    """
    out = Path(out)
    written: list[Path] = []
    try:
        for i, (vol, table) in enumerate(maps):
            k_out = outside_cluster_count(table)
            path = out / f"{stem}_k{k_out}_{i}.nii.gz"
            k_in: dict[str, int] = {}
            for e in table.entries:
                if e.target:
                    k_in[str(e.target)] = k_in.get(str(e.target), 0) + 1
            data = json.loads(table.to_json())
            data["provenance"] = {**dict(provenance or {}), "map_index": i, "k_outside": k_out, "k_inside": k_in}
            dtype = np.uint8 if vol.array.max() < 256 else np.uint16
            written.append(write_volume(vol.with_array(vol.array.astype(dtype)), path))
            written.append(write_bytes_atomic(json.dumps(data, indent=1).encode(), sidecar_path(path)))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written[::2]


def strip_image_suffix(name: str) -> str:
    """A file name without its image suffix ('a.nii.gz' -> 'a'): the stem of the maps written for it."""
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load_cases(labels_path: Path, cases_json: str | os.PathLike | None) -> dict:
    candidates = (
        [Path(cases_json)]
        if cases_json
        else [labels_path.parent / "cases.json", labels_path.parent.parent / "cases.json"]
    )
    for path in candidates:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except ValueError as err:
                raise InputError(f"invalid JSON: {err}", str(path)) from err
    raise InputError("cases.json not found (looked at " + ", ".join(map(str, candidates)) + ")", "reference_case")


def run_make_labelmap(
    image_path: str | os.PathLike,
    labels_path: str | os.PathLike,
    out: str | os.PathLike,
    n_maps: int = 4,
    k_outside: int | tuple[int, int] = (3, 10),
    k_inside: int | tuple[int, int] = (2, 3),
    seed: int = 0,
    reference_case: str | None = None,
    *,
    cases_json: str | os.PathLike | None = None,
) -> list[Path]:
    """CLI entry (`spinesynthseg make-labelmap`): read, convert, cluster, write; returns map paths.

    Labels: with ``reference_case`` (a lumbar_mri case id such as 'VB3_02'), the case's entry in
    ``cases_json`` (default: cases.json beside the labels folder or one level up) converts its
    instance ids (`label_converters.from_reference_case`). Otherwise the labels must already be
    output ids (vertebrae 1-28, discs 100 + id) and are kept as they are; convert other
    conventions first with `label_converters`. Caution: a map labelled 1..5 is then read as C1-C5.
    Nothing is written unless every map was computed; a failed write removes its partial files.
    """
    image_path, labels_path = Path(image_path), Path(labels_path)
    image, labels = read_image(image_path), read_labels(labels_path)
    check_same_geometry(labels, image, str(labels_path), str(image_path))
    if reference_case:
        cases = _load_cases(labels_path, cases_json)
        try:
            converted = label_converters.from_reference_case(labels.array, reference_case, cases)
        except InputError as err:
            raise InputError(err.problem, f"{labels_path} ({err.source or reference_case})") from err
        labels = labels.with_array(converted)
    else:
        present = [int(v) for v in np.unique(labels.array) if v > 0]
        bad = [v for v in present if not (is_vertebra(v) or is_disc(v))]
        if bad:
            raise InputError(
                f"labels {bad[:10]} are not output vertebra/disc ids; convert them first "
                "(label_converters) or give the reference case (--reference-case)",
                str(labels_path),
            )
        if present and present == list(range(1, len(present) + 1)) and len(present) < 7:
            log.warning(
                "%s: labels 1..%d are read as C1..C%d; give the reference case (--reference-case) if they are instance ids",
                labels_path,
                len(present),
                len(present),
            )
    try:
        maps = make_labelmaps(image, labels, n_maps=n_maps, k_outside=k_outside, k_inside=k_inside, seed=seed)
    except InputError as err:
        source = {"image": str(image_path), "labels": str(labels_path)}.get(err.source or "", err.source)
        raise InputError(err.problem, source) from err
    provenance = {
        "image": str(image_path),
        "labels": str(labels_path),
        "reference_case": reference_case,
        "n_maps": n_maps,
        "k_outside_range": list(_k_range(k_outside, "k_outside", 1)),
        "k_inside_range": list(_k_range(k_inside, "k_inside", 1)),
        "seed": seed,
    }
    return write_labelmaps(maps, out, strip_image_suffix(image_path.name), provenance=provenance)
