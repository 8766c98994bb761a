"""Inputs of ``spinesynthseg segment``: files, folders, globs and DICOM series; shards; case names.

`expand_inputs` turns the command line into the list of inputs; `shard` picks a cluster job's
share; `unique_case_names` names each input's outputs so that none clash or leave the folder.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import SimpleITK as sitk

from .errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_OUTPUT_MARKERS = ("_semantic.", "_instances.", ".seg.nrrd")  # this runner's own outputs, never inputs
_DICOM_SUFFIXES = ("", ".dcm", ".ima")
T = TypeVar("T")


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
