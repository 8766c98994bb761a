"""Converters from public spine label conventions to the output convention of `labels`.

Output convention (SPINEPS / VerSe / TPTBox): vertebrae C1-C7 = 1-7, T1-T12 = 8-19, L1-L6 = 20-25,
S1 (sacrum) = 26, T13 = 28; disc = 100 + id of the vertebra above. Converters that can only give
classes return the semantic map of `labels.SEMANTIC_CLASSES` (1 vertebral body / vertebra, 2 disc,
3 posterior elements, 4 spinal canal, 5 spinal cord). Every converter returns an int32 array of
the input's shape and raises `InputError` (a ValueError) naming the input labels it does not know,
unless ``drop_unknown=True``, which maps them to 0.

Sources of the codes:
    VerSe / TPTBox: Sekuboyina et al. 2021 (VerSe), TPTBox and SPINEPS documentation.
    SPIDER: van der Graaf et al. 2024, Sci Data 11:264, and the SPIDER baseline algorithm page:
        1-25 vertebrae numbered from the bottom (L5 = 1), 100 spinal canal, 101-125 partially
        visible vertebrae (same numbering + 100), 201-225 discs numbered from the bottom
        (L5/S1 = 201). No separate sacrum label is documented.
    TotalSegmentator v2: `totalsegmentator/map_to_binary.py` class maps ('total', 'total_mr',
        'vertebrae_mr', 'vertebrae_body').
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import InputError
from .labels import CRANIOCAUDAL_ORDER, SEMANTIC_IDS, VERTEBRA_NAMES, disc_label, present_labels, vertebra_id

_BODY = SEMANTIC_IDS["vertebral_body"]
_DISC = SEMANTIC_IDS["disc"]
_POSTERIOR = SEMANTIC_IDS["posterior_elements"]
_CANAL = SEMANTIC_IDS["spinal_canal"]
_CORD = SEMANTIC_IDS["spinal_cord"]
_L6, _T13 = 25, 28

# Reference data in shared/data/lumbar_mri: case prefix -> (kind, lowest structure's vertebra).
REFERENCE_DATASETS: dict[str, tuple[str, str]] = {
    "VB2": ("vertebra", "L5"),  # 7 bodies, nominally T11-L5
    "VB3": ("vertebra", "L5"),  # L1-L5
    "IVD": ("disc", "L5"),  # L1/L2 .. L5/S1
}


# ----------------------------------------------------------------------------- helpers


def _as_int_array(array: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(array)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InputError(f"{what} label map has non-integer values")
    elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != bool:
        raise InputError(f"{what} label map has dtype {arr.dtype}, expected integers")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise InputError(f"{what} label map has negative labels (min {arr.min()})")
    return arr


def _apply(array: np.ndarray, mapping: Mapping[int, int], what: str, drop_unknown: bool) -> np.ndarray:
    """Map every value through ``mapping`` (0 stays 0); unknown values raise or become 0."""
    arr = _as_int_array(array, what)
    present = present_labels(arr)
    unknown = [v for v in present if v and v not in mapping]
    if unknown and not drop_unknown:
        raise InputError(f"unknown {what} labels {unknown[:20]}: not in this label convention")
    if not present:
        return np.zeros(arr.shape, np.int32)
    lut = np.zeros(present[-1] + 1, np.int32)
    for value in present:
        lut[value] = mapping.get(value, 0)
    return lut[arr]


def _order(allow_l6: bool = False) -> list[int]:
    """Cranio-caudal vertebra ids without T13 (and without L6 unless asked)."""
    return [i for i in CRANIOCAUDAL_ORDER if i != _T13 and (allow_l6 or i != _L6)]


def _upward(lowest: int, count: int) -> list[int]:
    """``count`` vertebra ids from ``lowest`` upward (index 0 = lowest); shorter near C1."""
    order = _order(allow_l6=lowest == _L6)
    if lowest not in order:
        raise ValueError(f"lowest vertebra {VERTEBRA_NAMES.get(lowest, lowest)} is not supported here")
    pos = order.index(lowest)
    return [order[pos - k] for k in range(min(count, pos + 1))]


# ----------------------------------------------------------------------------- VerSe / TPTBox


def from_verse(array: np.ndarray, *, endplates: str = "vertebra", drop_unknown: bool = False) -> np.ndarray:
    """VerSe / TPTBox / SPINEPS instance map -> output convention (already the same numbering).

    Keeps vertebrae (1-26, 28) and discs (100 + vertebra id). Endplates (200 + vertebra id) go to
    their vertebra (``endplates='vertebra'``) or to 0 (``'drop'``). VerSe's coccyx (27) and any
    other code is unknown.
    """
    if endplates not in ("vertebra", "drop"):
        raise ValueError(f"endplates must be 'vertebra' or 'drop', got {endplates!r}")
    mapping = {v: v for v in VERTEBRA_NAMES}
    mapping.update({disc_label(v): disc_label(v) for v in VERTEBRA_NAMES if v != 26})
    mapping.update({200 + v: (v if endplates == "vertebra" else 0) for v in VERTEBRA_NAMES})
    return _apply(array, mapping, "VerSe/TPTBox", drop_unknown)


TPTBOX_SUBREGIONS: dict[int, int] = {
    **{code: _POSTERIOR for code in range(41, 49)},  # arcus, spinous, costal, articular processes
    49: _BODY,  # vertebra corpus border
    50: _BODY,  # vertebra corpus
    62: _BODY,  # endplate
    26: _BODY,  # sacrum (SPINEPS semantic output)
    100: _DISC,
    60: _CORD,
    61: _CANAL,
}


def from_tptbox_subregions(array: np.ndarray, *, drop_unknown: bool = False) -> np.ndarray:
    """TPTBox / SPINEPS sub-region map (41-50, 60-62, 100, 26) -> semantic classes.

    41-48 posterior elements, 49/50 corpus (border) and 62 endplate -> vertebral body, 100 ->
    disc, 61 -> spinal canal, 60 -> spinal cord, 26 sacrum -> vertebral body.
    """
    return _apply(array, TPTBOX_SUBREGIONS, "TPTBox sub-region", drop_unknown)


# ----------------------------------------------------------------------------- SPIDER


def from_spider(
    array: np.ndarray, lowest_vertebra: str = "L5", *, partial: str = "keep", drop_unknown: bool = False
) -> np.ndarray:
    """SPIDER (van der Graaf et al. 2024) mask -> output instance ids.

    SPIDER numbers vertebrae from the bottom: label k (1-25) is the k-th vertebra counted upward
    from the lowest labelled one, documented as L5 (L5 = 1). Assumption: label 1 is the vertebra
    named by ``lowest_vertebra`` ('L5' by default; 'L6' for a lumbosacral transitional vertebra,
    'L4' for a sacralised L5, 'S1' if a dataset labels the sacrum as 1). T13 is never inserted.
    Disc 200 + k lies directly below vertebra k (L5/S1 = 201 -> 124). Partially visible vertebrae
    (100 + k) keep their vertebra id (``partial='keep'``) or become 0 (``'drop'``). The spinal canal
    (100) is not an instance: it becomes 0 here; use `spider_semantic` to keep it.
    """
    if partial not in ("keep", "drop"):
        raise ValueError(f"partial must be 'keep' or 'drop', got {partial!r}")
    ids = _upward(vertebra_id(lowest_vertebra), 25)
    mapping: dict[int, int] = {100: 0}
    for k, vid in enumerate(ids, start=1):
        mapping[k] = vid
        mapping[100 + k] = vid if partial == "keep" else 0
        if vid != 26:
            mapping[200 + k] = disc_label(vid)
    return _apply(array, mapping, f"SPIDER (lowest vertebra {lowest_vertebra})", drop_unknown)


def spider_semantic(array: np.ndarray, *, drop_unknown: bool = False) -> np.ndarray:
    """SPIDER mask -> semantic classes: vertebrae (1-25, 101-125) 1, discs (201-225) 2, canal (100) 4.

    SPIDER vertebrae are whole vertebrae (body and posterior elements), all mapped to class 1.
    """
    mapping = {k: _BODY for k in range(1, 26)}
    mapping.update({100 + k: _BODY for k in range(1, 26)})
    mapping.update({200 + k: _DISC for k in range(1, 26)})
    mapping[100] = _CANAL
    return _apply(array, mapping, "SPIDER", drop_unknown)


# ----------------------------------------------------------------------------- TotalSegmentator

_TOTALSEG_CLASSES = {"total": 117, "total_mr": 50, "vertebrae_mr": 25, "vertebrae_body": 2}
SEMANTIC_TASKS = ("total_mr", "vertebrae_body")


def _totalseg_mapping(task: str, sacrum_as_s1: bool) -> dict[int, int]:
    mapping = {c: 0 for c in range(1, _TOTALSEG_CLASSES[task] + 1)}
    if task == "total":  # 25 sacrum, 26 S1, 27 L5 ... 31 L1, 32 T12 ... 43 T1, 44 C7 ... 50 C1
        mapping.update({c: 51 - c for c in range(27, 51)})
        mapping[26] = 26
        mapping[25] = 26 if sacrum_as_s1 else 0
    elif task == "vertebrae_mr":  # 1 sacrum, 2 L5 ... 6 L1, 7 T12 ... 18 T1, 19 C7 ... 25 C1
        mapping.update({c: 26 - c for c in range(2, 26)})
        mapping[1] = 26
    elif task == "total_mr":  # 18 sacrum, 19 vertebrae, 20 intervertebral discs, 21 spinal cord
        mapping.update({19: _BODY, 20: _DISC, 21: _CORD, 18: _BODY if sacrum_as_s1 else 0})
    else:  # vertebrae_body: 1 vertebral bodies, 2 intervertebral discs
        mapping.update({1: _BODY, 2: _DISC})
    return mapping


def from_totalsegmentator(
    array: np.ndarray, task: str = "total", *, sacrum_as_s1: bool = False, drop_unknown: bool = False
) -> np.ndarray:
    """TotalSegmentator v2 class map -> output convention.

    Tasks 'total' (CT, 117 classes) and 'vertebrae_mr' (25 classes) carry vertebra instances and
    return instance ids (S1 = 26, L5 = 24, ..., C1 = 1); TotalSegmentator's 'sacrum' class goes to
    0 in 'total' unless ``sacrum_as_s1`` (it is the only sacral class in 'vertebrae_mr', so 26).
    Tasks 'total_mr' (19 vertebrae, 20 discs, 21 spinal cord) and 'vertebrae_body' (1 bodies,
    2 discs) have no instances and return semantic classes (`SEMANTIC_TASKS`). Every other class
    of the task (organs, muscles, cord in 'total') becomes 0; ids beyond the task's class list are
    unknown.
    """
    if task not in _TOTALSEG_CLASSES:
        raise ValueError(f"unknown TotalSegmentator task {task!r}; known: {sorted(_TOTALSEG_CLASSES)}")
    return _apply(array, _totalseg_mapping(task, sacrum_as_s1), f"TotalSegmentator '{task}'", drop_unknown)


# ----------------------------------------------------------------------------- reference data


def from_reference(
    array: np.ndarray,
    labels_superior_to_inferior: Sequence[int],
    kind: str = "vertebra",
    *,
    lowest: str | None = None,
    top: str | None = None,
    drop_unknown: bool = False,
) -> np.ndarray:
    """Arbitrary instance ids ordered superior to inferior -> consecutive output ids.

    ``kind='vertebra'``: the n listed ids become the n consecutive vertebrae ending at ``lowest``
    (default L5), e.g. VB3 [1..5] -> 20..24, VB2's 7 bodies -> T11..L5 = 18..24. ``kind='disc'``:
    ids are discs, named by the vertebra above the lowest one (``lowest='L5'`` -> L5/S1 = 124), so
    IVD [5, 4, 3, 2, 1] -> 120..124. ``top`` instead names the highest structure's (upper)
    vertebra; giving both requires the span to hold exactly n structures. Transitional anatomy
    (T13, L6) is not handled: the standard sequence C1..L5, S1 is assumed.

    Raises:
        InputError: duplicate ids, a count that does not fit the span or the spine, or array
            labels missing from the list (unless ``drop_unknown``).
    """
    if kind not in ("vertebra", "disc"):
        raise ValueError(f"kind must be 'vertebra' or 'disc', got {kind!r}")
    order = [int(v) for v in labels_superior_to_inferior]
    if len(set(order)) != len(order) or not order or min(order) <= 0:
        raise InputError(f"labels_superior_to_inferior must be distinct positive ids, got {order}")
    spine = _order()
    if kind == "disc":
        spine = spine[:-1]  # no disc below S1
    if top is not None and lowest is not None:
        first, last = spine.index(_named(top, spine)), spine.index(_named(lowest, spine))
        if last - first + 1 != len(order):
            raise InputError(f"{len(order)} {kind}s listed but {top}..{lowest} spans {last - first + 1}")
    elif top is not None:
        first = spine.index(_named(top, spine))
    else:
        first = spine.index(_named(lowest or "L5", spine)) - len(order) + 1
    if first < 0 or first + len(order) > len(spine):
        raise InputError(f"{len(order)} {kind}s do not fit the spine for top={top!r}, lowest={lowest!r}")
    ids = spine[first : first + len(order)]
    mapping = {lab: (disc_label(v) if kind == "disc" else v) for lab, v in zip(order, ids)}
    return _apply(array, mapping, f"reference {kind}", drop_unknown)


def _named(name: str, spine: list[int]) -> int:
    vid = vertebra_id(name)
    if vid not in spine:
        raise InputError(f"vertebra {name} is not usable here (T13/L6 unsupported; no disc below S1)")
    return vid


def from_reference_case(array: np.ndarray, case_id: str, cases: Mapping[str, Mapping]) -> np.ndarray:
    """Convert a lumbar_mri reference label map using its ``cases.json`` entry.

    The case prefix (VB2, VB3, IVD; see `REFERENCE_DATASETS`) gives the kind and lowest level.
    """
    prefix = case_id.split("_")[0]
    if prefix not in REFERENCE_DATASETS:
        raise InputError(f"unknown reference dataset prefix {prefix!r}; known: {sorted(REFERENCE_DATASETS)}", case_id)
    if case_id not in cases:
        raise InputError("case not found in cases.json", case_id)
    kind, lowest = REFERENCE_DATASETS[prefix]
    return from_reference(array, cases[case_id]["labels_superior_to_inferior"], kind, lowest=lowest)


# ----------------------------------------------------------------------------- by convention name

INSTANCE_CONVENTIONS = ("spineps", "verse", "spider", "totalsegmentator", "totalsegmentator_mr")


def convention_name(convention: str) -> str:
    """The canonical spelling: case and '-' / '_' do not matter ('TotalSegmentator-MR' is 'totalsegmentator_mr')."""
    return str(convention).strip().lower().replace("-", "_")


def check_convention(convention: str, known: Sequence[str] = INSTANCE_CONVENTIONS, source: str = "") -> str:
    """``convention`` in its canonical spelling; `InputError` naming ``source`` when it is not one of ``known``."""
    name = convention_name(convention)
    if name not in known:
        raise InputError(f"unknown label convention {convention!r}; use one of {', '.join(known)}", source)
    return name


def convert_instances(array: np.ndarray, convention: str, source: str = "segmentation") -> np.ndarray:
    """A label array in a named convention (`INSTANCE_CONVENTIONS`) -> output instance ids.

    'spineps' and 'verse' share the numbering (endplates 200 + id join their vertebra; VerSe's
    coccyx, 27, is not a level here and is dropped); 'spider' counts from L5 = 1;
    'totalsegmentator' is the CT 'total' task, 'totalsegmentator_mr' the 'vertebrae_mr' task,
    whose other classes (organs, canal, cord) are dropped. A label the convention does not define
    is an error naming ``source``: a wrong convention would otherwise silently lose levels.
    """
    name = check_convention(convention, source=source)
    try:
        if name in ("spineps", "verse"):
            arr = np.asarray(array)
            return from_verse(np.where(arr == 27, 0, arr) if name == "verse" else arr)
        if name == "spider":
            return from_spider(array)
        return from_totalsegmentator(array, "total" if name == "totalsegmentator" else "vertebrae_mr")
    except InputError as err:
        raise InputError(f"{err.problem} (is the label convention '{convention}' right?)", source) from err
