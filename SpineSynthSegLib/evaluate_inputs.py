"""The inputs of `spinesynthseg evaluate`: label files paired by case id, groups, label conventions.

Files pair by case id (`case_id`): the file name without its format suffix and trailing markers
such as ``_semantic`` or ``_seg``. `load_case` reads one case's files in a named convention
(`CONVENTIONS`) and converts them to the output convention of `labels`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import label_converters as conv
from .errors import InputError
from .io import Volume, check_same_geometry, read_labels
from .labels import SEMANTIC_CLASSES, semantic_of

LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr")
CASE_MARKERS = ("_semantic", "_instances", "_seg", "_img", "_labels", "_label", "_mask", "_pred")
CONVENTIONS: dict[str, str] = {
    "spineps": "SPINEPS/VerSe/TPTBox instances: vertebrae 1-28, discs 100+id, endplates 200+id (-> vertebra)",
    "verse": "as spineps; VerSe's coccyx (27) is dropped",
    "spider": "SPIDER: vertebrae numbered upward from L5 = 1, discs 201.., partial 101.., canal 100 (dropped)",
    "totalsegmentator": "TotalSegmentator v2 'total' (CT) class ids",
    "totalsegmentator_mr": "TotalSegmentator v2 'vertebrae_mr' class ids",
    "reference": "shared lumbar_mri reference labels, ids ordered by cases.json (VB2, VB3, IVD)",
    "semantic": "semantic classes: 1 vertebral body, 2 disc, 3 posterior elements, 4 canal, 5 cord",
}  # the instance ones are label_converters.INSTANCE_CONVENTIONS; '-' and '_' alike


def case_id(path: str | Path) -> str:
    """'VB3_02_img_instances.nii.gz' -> 'VB3_02' (format suffix and trailing markers removed)."""
    name = Path(path).name
    for suffix in LABEL_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    changed = True
    while changed:
        changed = False
        for marker in CASE_MARKERS:
            if name.lower().endswith(marker) and len(name) > len(marker):
                name, changed = name[: -len(marker)], True
    return name


@dataclass
class CaseFiles:
    """The label files of one case in one folder."""

    semantic: Path | None = None
    labels: Path | None = None

    def names(self) -> list[str]:
        return [str(p) for p in (self.semantic, self.labels) if p is not None]


def find_label_files(folder: str | Path) -> dict[str, CaseFiles]:
    """Case id -> files, for every label file in ``folder`` (not recursive; other files ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", str(folder))
    out: dict[str, CaseFiles] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or not path.name.lower().endswith(LABEL_SUFFIXES):
            continue
        files = out.setdefault(case_id(path), CaseFiles())
        slot = "semantic" if "_semantic" in path.name.lower() else "labels"
        if getattr(files, slot) is not None:
            raise InputError(f"two label files for case {case_id(path)!r}: {getattr(files, slot).name} and {path.name}",
                             str(folder))
        setattr(files, slot, path)
    return out


def read_groups(path: str | Path) -> dict[str, str]:
    """Case id -> group from a CSV with columns case,group (header row optional)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("groups file not found", str(path))
    groups: dict[str, str] = {}
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise InputError(f"not a text CSV file ({err.reason})", str(path)) from err
    for i, row in enumerate(csv.reader(text.splitlines())):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if i == 0 and row[0].strip().lower() in ("case", "case_id", "id"):
            continue
        if len(row) < 2 or not row[1].strip():
            raise InputError(f"line {i + 1}: expected 'case,group', got {row}", str(path))
        groups[case_id(row[0].strip())] = row[1].strip()
    if not groups:
        raise InputError("no case,group rows", str(path))
    return groups


@dataclass
class CaseLabels:
    """A case's labels in the output convention, on the grid of ``geometry``."""

    geometry: Volume
    semantic: np.ndarray
    instances: np.ndarray | None
    source: str


def _semantic_of_instances(instances: np.ndarray) -> np.ndarray:
    lut = np.zeros(int(instances.max(initial=0)) + 1, np.uint8)
    for i in np.flatnonzero(np.bincount(instances.ravel())):
        lut[i] = semantic_of(int(i))
    return lut[instances]


def _converter(convention: str, case: str, cases_info: dict | None) -> Callable[[np.ndarray], np.ndarray]:
    if convention == "reference":
        if cases_info is None:
            raise InputError("the 'reference' convention needs cases.json (beside or above the folder, or cases_json)")
        return lambda a: conv.from_reference_case(a, case, cases_info)
    return lambda a: conv.convert_instances(a, convention, case)


def load_case(files: CaseFiles, convention: str, case: str, cases_info: dict | None = None) -> CaseLabels:
    """Read one case's label file(s) and convert them to the output convention."""
    instances, semantic, geometry = None, None, None
    if files.labels is not None:
        vol = read_labels(files.labels)
        geometry = vol
        if convention == "semantic":
            semantic = vol.array
        else:
            try:
                instances = _converter(convention, case, cases_info)(vol.array).astype(np.int32)
            except InputError as err:
                raise InputError(err.problem, str(files.labels)) from err
            semantic = _semantic_of_instances(instances)
    if files.semantic is not None:
        vol = read_labels(files.semantic)
        if geometry is not None:
            check_same_geometry(vol, geometry, str(files.semantic), str(files.labels))
        geometry, semantic = vol, vol.array
    if semantic is None:
        raise InputError(f"no label file for case {case!r}")
    if semantic.max(initial=0) > max(SEMANTIC_CLASSES):
        raise InputError(f"semantic classes must be 0-{max(SEMANTIC_CLASSES)}, found {int(semantic.max())} "
                         "(an instance map? name it without '_semantic' or pick its convention)",
                         str(files.semantic or files.labels))
    return CaseLabels(geometry, semantic, instances, " + ".join(files.names()))


def read_cases_info(ref_dir: Path, cases_json: str | Path | None) -> dict | None:
    """cases.json (given, else beside or above ``ref_dir``) for the 'reference' convention; None if absent."""
    paths = [Path(cases_json)] if cases_json else [ref_dir / "cases.json", ref_dir.parent / "cases.json"]
    for p in paths:
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError) as err:
                raise InputError(f"not a JSON file: {err}", str(p)) from err
    if cases_json:
        raise InputError("cases.json not found", str(cases_json))
    return None
