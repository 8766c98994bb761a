"""Names, colours and standard terminology of the segments SpineSynthSeg puts into 3D Slicer.

`label_name` / `label_from_name` convert between label ids and level names (vertebrae 'L3',
discs 'L3-L4', or the semantic classes); `label_color` gives the colours `segment_files` writes
into .seg.nrrd files; `terminology_entry` gives Slicer's TerminologyEntry string from `TERMINOLOGY`.

The SNOMED CT codes are those of DICOM PS3.16 CID 7603 (Vertebra) and CID 7604 (Intervertebral
Disc), the codes the Slicer TotalSegmentator extension uses for vertebrae, SCT 54735007 for the
sacrum and SCT 360499006 (Intervertebral disc) for the semantic disc class. T13, L6 and the
semantic vertebral-body class have no verified code here and get no terminology entry (name and
colour only).

Plain Python (no MRML): importable and usable without Slicer.
"""

from __future__ import annotations

import colorsys

from .labels import DISC_OFFSET, SEMANTIC_CLASSES, VERTEBRA_IDS, disc_label, vertebra_name

_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_CATEGORY = ("SCT", "123037004", "Anatomical Structure")
_VERTEBRA_SCT = {  # DICOM PS3.16 CID 7603 Vertebra
    "C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003", "C6": "36054005",
    "C7": "87391001", "T1": "64864005", "T2": "53733008", "T3": "1626008", "T4": "73071006", "T5": "56401006",
    "T6": "45296009", "T7": "62487009", "T8": "11068009", "T9": "82687006", "T10": "7610001", "T11": "12989004",
    "T12": "23215003", "L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002", "L5": "49668003",
}
_DISC_SCT = {  # DICOM PS3.16 CID 7604 Intervertebral Disc
    "C2-C3": "1078209008", "C3-C4": "58820006", "C4-C5": "49400002", "C5-C6": "73959003", "C6-C7": "75095006",
    "C7-T1": "37414007", "T1-T2": "40908007", "T2-T3": "6004007", "T3-T4": "2620004", "T4-T5": "82965004",
    "T5-T6": "72692000", "T6-T7": "74401007", "T7-T8": "28693002", "T8-T9": "9188009", "T9-T10": "113209001",
    "T10-T11": "34959001", "T11-T12": "1537001", "T12-L1": "76206002", "L1-L2": "80064006", "L2-L3": "67459009",
    "L3-L4": "62551000", "L4-L5": "84020006", "L5-S1": "715056000",
}
TERMINOLOGY: dict[str, tuple[str, str, str]] = {
    **{name: ("SCT", code, f"{name} vertebra") for name, code in _VERTEBRA_SCT.items()},
    **{name: ("SCT", code, f"{name.replace('-', '/')} disc") for name, code in _DISC_SCT.items()},
    "S1": ("SCT", "54735007", "Sacrum"),
    "disc": ("SCT", "360499006", "Intervertebral disc"),
}
"""Segment name -> (coding scheme, code value, code meaning) of its terminology type."""


def terminology_entry(name: str) -> str | None:
    """Slicer's TerminologyEntry string for a segment name ('L3', 'L3-L4', 'disc'), or None."""
    code = TERMINOLOGY.get(name)
    if code is None:
        return None
    return f"{_CONTEXT}~{'^'.join(_CATEGORY)}~{'^'.join(code)}~^^~{_ANATOMIC_CONTEXT}~^^~^^"


def label_name(label: int, semantic: bool = False) -> str:
    """'L3' (23), 'L3-L4' (123), or the semantic class name ('vertebral body', 'disc')."""
    if semantic:
        return SEMANTIC_CLASSES.get(int(label), f"label {label}").replace("_", " ")
    try:
        return vertebra_name(int(label))
    except ValueError:
        return f"label {label}"


def label_color(label: int, semantic: bool = False) -> tuple[float, float, float]:
    """RGB in [0, 1]: the same colours as `segment_files` writes into .seg.nrrd files."""
    fixed = {1: (0.95, 0.84, 0.57), 2: (0.39, 0.59, 0.82)}
    if semantic and label in fixed:
        return fixed[label]
    return colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.6 if label >= DISC_OFFSET else 0.8, 0.95)


def label_from_name(name: str) -> int | None:
    """Inverse of `label_name` for level names: 'L3' -> 23, 'L3-L4' -> 123; None otherwise."""
    text = name.strip().upper()
    if text in VERTEBRA_IDS:
        return VERTEBRA_IDS[text]
    upper, sep, _lower = text.partition("-")
    if sep and upper in VERTEBRA_IDS:
        try:
            return disc_label(VERTEBRA_IDS[upper])
        except ValueError:
            return None
    return None
