"""Batch runner behind ``spinesynthseg segment INPUT... -o OUTDIR``.

Inputs are files, folders (every NIfTI/NRRD/MHA inside, recursively, plus DICOM series folders)
and globs. The model is loaded once; each input is read, segmented and written on its own, so a
bad input fails alone (its error names the file) while the batch goes on. Per case, in OUTDIR:

- ``<case>_semantic.nii.gz`` (or ``.seg.nrrd``): 1 vertebral body, 2 disc, on the input's grid;
- ``<case>_instances.nii.gz`` (or ``.seg.nrrd``) and ``<case>_levels.json`` when level assignment
  (`instances.assign_levels`) is available.

A case's files are written atomically and together: when one write fails the others of that
case are removed. Existing outputs are never replaced without ``overwrite=True``.

Exit code for the CLI (`exit_code`): 0 when every case succeeded; 1 when any case failed for a
reason other than its input; otherwise 2 when any case failed because of its input (unreadable
file, existing output without --overwrite).
"""

from __future__ import annotations

import colorsys
import glob
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .inference import InferenceConfig, Segmenter
from .io import Volume, read_image, to_sitk, write_bytes_atomic, write_volume
from .labels import SEMANTIC_CLASSES, vertebra_name

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
OUTPUT_FORMATS = {"nifti": ".nii.gz", "seg.nrrd": ".seg.nrrd"}
_OUTPUT_MARKERS = ("_semantic.", "_instances.", ".seg.nrrd")
_DICOM_SUFFIXES = ("", ".dcm", ".ima")
InstancesFn = Callable[[Volume], tuple[Volume, dict]]
T = TypeVar("T")


@dataclass
class CaseResult:
    """Outcome of one input.

    Attributes:
        input: the input file or DICOM folder.
        case: the case name used for the outputs.
        status: 'ok' or 'failed'.
        outputs: files written.
        error: what went wrong (names the file) when failed.
        bad_input: the failure is the input's (unreadable, existing output): exit code 2, not 1.
        seconds: wall time for the case; timings: `segment_volume`'s stage times.
        levels: the level-assignment report when computed.
    """

    input: Path
    case: str
    status: str = "ok"
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    bad_input: bool = False
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    levels: dict | None = None


# ----------------------------------------------------------------------------- inputs


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), path.suffix.lower())


def is_dicom_folder(folder: Path) -> bool:
    """A folder holding ``*.dcm`` files, or files (no/numeric suffix) that GDCM reads as a series."""
    try:
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return False
    candidates = [p for p in files if p.suffix.lower() in _DICOM_SUFFIXES or p.suffix[1:].isdigit()]
    if any(p.suffix.lower() == ".dcm" for p in candidates):
        return True
    if not candidates:
        return False
    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def _is_image_file(path: Path) -> bool:
    name = path.name
    return (
        path.is_file() and not name.startswith(".") and _suffix(path) in IMAGE_SUFFIXES
        and not any(marker in name for marker in _OUTPUT_MARKERS)
    )


def _expand_folder(folder: Path) -> list[Path]:
    if is_dicom_folder(folder):
        return [folder]
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            found.extend(_expand_folder(entry))
        elif _is_image_file(entry):
            found.append(entry)
    return found


def expand_inputs(patterns: Iterable[str | os.PathLike]) -> list[Path]:
    """Turn files, folders and globs into the list of inputs, in order, without duplicates.

    A folder contributes every NIfTI/NRRD/MHA file in it and below it (hidden files and this
    runner's own ``*_semantic.*`` / ``*_instances.*`` / ``*.seg.nrrd`` outputs excepted) and every
    DICOM series folder (`is_dicom_folder`). A glob contributes its matching image files and
    folders. A path given literally is kept even when it does not exist or has an unknown
    suffix, so that it fails as its own case with a clear error.

    Raises:
        InputError: when nothing at all was found.
    """
    patterns = [str(p) for p in patterns]
    found: list[Path] = []
    for text in patterns:
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                log.warning("no file matches %s", text)
            for match in map(Path, matches):
                found.extend(_expand_folder(match) if match.is_dir() else [match] if _is_image_file(match) else [])
        else:
            path = Path(text).expanduser()
            found.extend(_expand_folder(path) if path.is_dir() else [path])
    unique = list(dict.fromkeys(Path(os.path.abspath(p)) for p in found))
    if not unique:
        raise InputError("no input images found (NIfTI, NRRD, MHA or DICOM folders)", ", ".join(patterns))
    return unique


def shard(items: Sequence[T], spec: str) -> list[T]:
    """Items of shard ``i`` of ``n`` (``spec`` = "i/n", 1-based): every n-th item from the i-th.

    Round robin (items[i-1::n]) keeps shards balanced when inputs are sorted by size or site.

    Raises:
        InputError: a malformed spec, n < 1 or i outside 1..n.
    """
    text = str(spec).strip()
    left, sep, right = text.partition("/")
    try:
        i, n = int(left), int(right)
    except ValueError:
        i = n = 0
        sep = ""
    if not sep or n < 1 or not 1 <= i <= n:
        raise InputError(f"--shard must be 'i/n' with 1 <= i <= n (1-based), got {spec!r}")
    return list(items[i - 1 :: n])


def case_name(path: str | os.PathLike) -> str:
    """'sub-01_T2w' for .../sub-01_T2w.nii.gz; the folder name for a DICOM folder."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return path.name
    name, suffix = path.name, _suffix(path)
    if suffix in IMAGE_SUFFIXES or suffix == ".dcm":
        return name[: len(name) - len(suffix)]
    return path.stem or name


def unique_case_names(paths: Sequence[Path]) -> list[str]:
    """Case names, made unique by prefixing parent folder names (then a counter) where they clash.

    Names never hold a path separator or the root, so every output stays inside the output folder.
    """
    names = [case_name(p) for p in paths]
    folders = [Path(os.path.abspath(p)).parent.parts[1:] for p in paths]  # [1:]: not the root
    for depth in range(1, 8):
        groups: dict[str, set] = {}
        for name, folder in zip(names, folders):
            groups.setdefault(name, set()).add(folder)
        clashes = {n for n, fs in groups.items() if len(fs) > 1}  # one folder: folder names cannot help
        if not clashes:
            break
        for idx, path in enumerate(paths):
            if names[idx] in clashes:
                names[idx] = "_".join((*folders[idx][max(0, len(folders[idx]) - depth):], case_name(path)))
    seen: dict[str, int] = {}
    for idx, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        names[idx] = name if seen[name] == 1 else f"{name}_{seen[name]}"
    return names


# ----------------------------------------------------------------------------- outputs


def _color(label: int) -> tuple[float, float, float]:
    fixed = {1: (0.95, 0.84, 0.57), 2: (0.39, 0.59, 0.82)}
    if label in fixed:
        return fixed[label]
    return colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.6 if label >= 100 else 0.8, 0.95)


def write_seg_nrrd(vol: Volume, path: str | os.PathLike, names: dict[int, str]) -> Path:
    """Write a label map as a Slicer segmentation (.seg.nrrd, one layer), atomically.

    Each non-zero label present becomes a segment (``SegmentN_ID/Name/LabelValue/Layer/Color/
    Extent``); the NRRD keeps the volume's geometry (LPS space directions and origin).
    """
    path = Path(path)
    img = to_sitk(vol)
    img.SetMetaData("Segmentation_MasterRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_SourceRepresentation", "Binary labelmap")
    img.SetMetaData("Segmentation_ContainedRepresentationNames", "Binary labelmap|")
    img.SetMetaData("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    for n, label in enumerate(int(v) for v in np.unique(vol.array) if v != 0):
        idx = np.nonzero(vol.array == label)
        extent = " ".join(f"{int(a.min())} {int(a.max())}" for a in idx)
        name = names.get(label, str(label))
        for key, value in (
            ("ID", f"Segment_{label}"), ("Name", name), ("NameAutoGenerated", "0"), ("LabelValue", str(label)),
            ("Layer", "0"), ("Color", " ".join(f"{c:.3f}" for c in _color(label))), ("ColorAutoGenerated", "0"),
            ("Extent", extent), ("Tags", "Segmentation.Status:completed|"),
        ):
            img.SetMetaData(f"Segment{n}_{key}", value)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".nrrd", dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(img, tmp, True)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _instance_names(vol: Volume) -> dict[int, str]:
    names = {}
    for label in (int(v) for v in np.unique(vol.array) if v != 0):
        try:
            names[label] = vertebra_name(label)
        except ValueError:
            names[label] = str(label)
    return names


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple, set)):
        return list(obj.tolist() if isinstance(obj, np.ndarray) else obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def output_paths(out_dir: Path, case: str, output_format: str, with_instances: bool) -> dict[str, Path]:
    """The files one case writes: 'semantic', and 'instances' + 'levels' with level assignment."""
    ext = OUTPUT_FORMATS[output_format]
    if not case or Path(case).name != case:
        raise ValueError(f"case name {case!r} would leave the output folder")  # a bug, not bad input
    paths = {"semantic": out_dir / f"{case}_semantic{ext}"}
    if with_instances:
        paths["instances"] = out_dir / f"{case}_instances{ext}"
        paths["levels"] = out_dir / f"{case}_levels.json"
    return paths


def _write_label_map(vol: Volume, path: Path, names: dict[int, str]) -> None:
    data = vol.array
    if data.size and 0 <= data.min() and data.max() <= 255:
        vol = vol.with_array(data.astype(np.uint8))
    if path.name.endswith(".seg.nrrd"):
        write_seg_nrrd(vol, path, names)
    else:
        write_volume(vol, path)


def _write_case(
    targets: dict[str, Path], semantic: Volume, instances: Volume | None, report: dict | None
) -> list[Path]:
    """Write a case's files; on any failure remove the ones already written, then re-raise."""
    written: list[Path] = []
    try:
        _write_label_map(semantic, targets["semantic"], {k: v for k, v in SEMANTIC_CLASSES.items() if k})
        written.append(targets["semantic"])
        if instances is not None:
            _write_label_map(instances, targets["instances"], _instance_names(instances))
            written.append(targets["instances"])
            text = json.dumps(report or {}, indent=1, default=_json_default)
            write_bytes_atomic(text.encode(), targets["levels"])
            written.append(targets["levels"])
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _default_instances() -> InstancesFn | None:
    try:
        from .instances import assign_levels
    except ImportError as err:
        log.warning("level assignment unavailable (%s): writing semantic maps only", err)
        return None
    return assign_levels


# ----------------------------------------------------------------------------- the runner


def _segment_case(path: Path, case: str, out_dir: Path, segmenter: Segmenter, assign: InstancesFn | None,
                  output_format: str, overwrite: bool) -> CaseResult:
    t0 = time.perf_counter()
    result = CaseResult(path, case)
    targets = output_paths(out_dir, case, output_format, assign is not None)
    try:
        existing = [p for p in targets.values() if p.exists()]
        if existing and not overwrite:
            raise InputError("output already exists (use --overwrite to replace it)", str(existing[0]))
        vol = read_image(path)
        seg = segmenter(vol)
        result.timings = seg.timings
        instances = report = None
        if assign is not None:
            instances, report = assign(seg.semantic)
            result.levels = report
        result.outputs = _write_case(targets, seg.semantic, instances, report)
    except InputError as err:
        result.status, result.error, result.bad_input = "failed", str(err), True
    except Exception as err:  # one case's failure must not stop the batch
        log.debug("case %s failed", path, exc_info=True)
        result.status, result.error = "failed", f"{path}: {type(err).__name__}: {err}"
    result.seconds = time.perf_counter() - t0
    if result.error:
        log.error("%s", result.error)
    return result


def run_segment(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    model_path: str | os.PathLike | None = None,
    config: InferenceConfig | None = None,
    overwrite: bool = False,
    output_format: str = "nifti",
    shard: str | None = None,
    progress: bool = True,
    instances: InstancesFn | str | None = "auto",
) -> list[CaseResult]:
    """Segment every input into ``out_dir``; returns one `CaseResult` per input (in order).

    Args:
        inputs: files, folders, DICOM folders and globs (`expand_inputs`).
        out_dir: output folder (created).
        model_path: checkpoint; default the shipped ``models/default.pt``.
        config: inference settings (default InferenceConfig()).
        overwrite: replace existing outputs (otherwise such a case fails, naming the file).
        output_format: 'nifti' (.nii.gz) or 'seg.nrrd' (Slicer segmentation).
        shard: "i/n" to process only shard i of n (`shard`).
        progress: show a tqdm progress bar (stderr).
        instances: level assignment ``f(semantic) -> (instances Volume, report dict)``; 'auto'
            uses `instances.assign_levels` when that module exists; None skips it.

    Raises:
        InputError: no inputs, a bad shard or format, or no usable model (before any case runs).
    """
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"output format must be one of {sorted(OUTPUT_FORMATS)}, got {output_format!r}")
    paths = expand_inputs(inputs)
    if shard is not None:
        paths = _select_shard(paths, shard)
        log.info("shard %s: %d input(s)", shard, len(paths))
    segmenter = Segmenter.from_checkpoint(model_path, config)
    assign = _default_instances() if instances == "auto" else instances
    out = Path(out_dir)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    cases = list(zip(paths, unique_case_names(paths)))
    results: list[CaseResult] = []
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with logging_redirect_tqdm():
        bar = tqdm(cases, disable=not progress, unit="case", desc="segment", dynamic_ncols=True)
        for path, case in bar:
            bar.set_postfix_str(case, refresh=False)
            results.append(_segment_case(path, case, out, segmenter, assign, output_format, overwrite))
    if created and not any(out.iterdir()):  # every case failed: leave no empty folder behind
        out.rmdir()
    log.info("%s", summarize(results))
    return results


_select_shard = shard


def exit_code(results: Sequence[CaseResult]) -> int:
    """0 all cases ok; 1 any failure not caused by its input; else 2 any bad-input failure."""
    failed = [r for r in results if r.status != "ok"]
    if not failed:
        return 0
    return 2 if all(r.bad_input for r in failed) else 1


def summarize(results: Sequence[CaseResult]) -> str:
    """One line: counts, total time and the failed inputs."""
    ok = sum(r.status == "ok" for r in results)
    seconds = sum(r.seconds for r in results)
    text = f"{ok}/{len(results)} case(s) segmented in {seconds:.1f} s"
    failed = [r for r in results if r.status != "ok"]
    if failed:
        text += f"; {len(failed)} failed: " + ", ".join(str(r.input) for r in failed)
    return text
