"""The label conventions: one module owns them, everything else imports from here.

Output convention (SPINEPS / VerSe / TPTBox numbering):
    vertebrae C1-C7 = 1-7, T1-T12 = 8-19, L1-L6 = 20-25, S1 = 26, T13 = 28;
    intervertebral disc = 100 + id of the vertebra above (L4-L5 disc = 123);
    semantic map: 1 vertebral body, 2 disc, 3 posterior elements, 4 spinal canal, 5 spinal cord.

Generation label maps (what synthesis consumes) carry a `LabelTable` sidecar (JSON) that names
each generation label, its tissue (for the physics mode) and its segmentation target (an output
label id, or 0 when the label only drives image generation).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

# ----------------------------------------------------------------------------- vertebra ids

_NAMES: dict[int, str] = {}
_NAMES.update({i: f"C{i}" for i in range(1, 8)})
_NAMES.update({7 + i: f"T{i}" for i in range(1, 13)})
_NAMES.update({19 + i: f"L{i}" for i in range(1, 7)})
_NAMES.update({26: "S1", 28: "T13"})
VERTEBRA_NAMES: dict[int, str] = dict(_NAMES)
VERTEBRA_IDS: dict[str, int] = {v: k for k, v in VERTEBRA_NAMES.items()}
DISC_OFFSET = 100
ENDPLATE_OFFSET = 200

# Cranio-caudal order of the ids (T13 sits between T12 and L1, L6 between L5 and S1).
CRANIOCAUDAL_ORDER: tuple[int, ...] = tuple(range(1, 20)) + (28,) + tuple(range(20, 27))

SEMANTIC_CLASSES: dict[int, str] = {
    0: "background",
    1: "vertebral_body",
    2: "disc",
    3: "posterior_elements",
    4: "spinal_canal",
    5: "spinal_cord",
}
SEMANTIC_IDS: dict[str, int] = {v: k for k, v in SEMANTIC_CLASSES.items()}

# Tissue vocabulary shared by the phantom, the EM label maps and the physics tissue table.
TISSUES: tuple[str, ...] = (
    "air",
    "fat",
    "muscle",
    "csf",
    "cord",
    "marrow",
    "cortical_bone",
    "endplate",
    "nucleus",
    "annulus",
    "ligament",
    "viscera",
    "unknown",
)


def vertebra_name(label: int) -> str:
    """'L4' for 23, 'L4-L5' for disc 123; raises ValueError for an unknown id."""
    if label in VERTEBRA_NAMES:
        return VERTEBRA_NAMES[label]
    if label - DISC_OFFSET in VERTEBRA_NAMES:
        upper = label - DISC_OFFSET
        below = next_vertebra(upper)
        return f"{VERTEBRA_NAMES[upper]}-{VERTEBRA_NAMES[below]}" if below else f"{VERTEBRA_NAMES[upper]}-disc"
    raise ValueError(f"unknown vertebra or disc label {label}")


def vertebra_id(name: str) -> int:
    try:
        return VERTEBRA_IDS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown vertebra name {name!r}") from None


def next_vertebra(label: int, has_t13: bool = False, has_l6: bool = False) -> int | None:
    """The id of the vertebra below ``label`` (None below S1)."""
    order = [i for i in CRANIOCAUDAL_ORDER if (i != 28 or has_t13) and (i != 25 or has_l6)]
    if label not in order:
        if label in VERTEBRA_NAMES:  # T13 / L6 asked for although not in the chosen order
            order = list(CRANIOCAUDAL_ORDER)
        else:
            raise ValueError(f"unknown vertebra label {label}")
    pos = order.index(label)
    return order[pos + 1] if pos + 1 < len(order) else None


def disc_label(upper_vertebra: int) -> int:
    """Disc id below a vertebra: 100 + id of the vertebra above."""
    if upper_vertebra not in VERTEBRA_NAMES or upper_vertebra == 26:
        raise ValueError(f"no disc below vertebra label {upper_vertebra}")
    return DISC_OFFSET + upper_vertebra


def is_vertebra(label: int) -> bool:
    return label in VERTEBRA_NAMES


def is_disc(label: int) -> bool:
    return (label - DISC_OFFSET) in VERTEBRA_NAMES


def semantic_of(label: int) -> int:
    """Semantic class of an output (instance) label: 1 vertebral body, 2 disc, 0 otherwise."""
    if is_vertebra(label):
        return SEMANTIC_IDS["vertebral_body"]
    if is_disc(label):
        return SEMANTIC_IDS["disc"]
    return 0


def present_labels(labels: np.ndarray) -> list[int]:
    """The distinct values of a label array, ascending (bincount when they are small: far faster than unique)."""
    arr = np.asarray(labels)
    if arr.size == 0:
        return []
    if arr.dtype.kind in "biu" and arr.min() >= 0 and arr.max() <= 100_000:
        return np.flatnonzero(np.bincount(arr.ravel().astype(np.intp, copy=False))).tolist()
    return np.unique(arr).tolist()


def semantic_map(instances: np.ndarray) -> np.ndarray:
    """Map an instance label array (vertebrae / discs) to the semantic classes."""
    lut_keys = np.unique(instances)
    out = np.zeros(instances.shape, np.uint8)
    for lab in lut_keys:
        if lab:
            out[instances == lab] = semantic_of(int(lab))
    return out


# ----------------------------------------------------------------------------- label tables


@dataclass(frozen=True)
class LabelEntry:
    """One generation label.

    Attributes:
        id: the integer in the label map.
        name: human readable ('L3 marrow', 'cluster 4').
        tissue: one of `TISSUES` (drives the physics mode).
        target: output label id this voxel belongs to (e.g. 22 for L3), 0 if generation-only.
    """

    id: int
    name: str
    tissue: str = "unknown"
    target: int = 0

    def __post_init__(self) -> None:
        if self.tissue not in TISSUES:
            raise ValueError(f"label {self.id}: unknown tissue {self.tissue!r}; known: {TISSUES}")
        if self.id < 0 or self.target < 0:
            raise ValueError(f"label {self.id}: ids and targets must be >= 0")


@dataclass(frozen=True)
class LabelTable:
    """The sidecar of a generation label map: which labels exist and what they mean."""

    entries: tuple[LabelEntry, ...]

    def __post_init__(self) -> None:
        ids = [e.id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate label ids in the label table")

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries]

    def entry(self, label: int) -> LabelEntry:
        for e in self.entries:
            if e.id == label:
                return e
        raise KeyError(label)

    def targets(self) -> list[int]:
        """Sorted distinct output labels that this map can supervise."""
        return sorted({e.target for e in self.entries if e.target})

    def target_lut(self) -> np.ndarray:
        """Lookup array: ``lut[generation_label] = output label``."""
        lut = np.zeros(max(self.ids, default=0) + 1, np.int32)
        for e in self.entries:
            lut[e.id] = e.target
        return lut

    def target_map(self, labels: np.ndarray) -> np.ndarray:
        """Convert a generation label map to its output (target) label map."""
        self.check(labels)
        return self.target_lut()[labels]

    def check(self, labels: np.ndarray, source: str = "label map") -> None:
        """Raise InputError if the map holds labels that the table does not describe."""
        unknown = sorted(set(present_labels(labels)) - set(self.ids))
        if unknown:
            raise InputError(f"labels {unknown[:10]} are not described by the label table", source)

    def to_json(self) -> str:
        return json.dumps({"format": "spinesynthseg-labels/1", "labels": [asdict(e) for e in self.entries]}, indent=1)

    @classmethod
    def from_json(cls, text: str, source: str = "label table") -> LabelTable:
        try:
            data = json.loads(text)
            return cls(tuple(LabelEntry(**item) for item in data["labels"]))
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"invalid label table: {err}", source) from err

    @classmethod
    def load(cls, path: str | Path) -> LabelTable:
        path = Path(path)
        if not path.exists():
            raise InputError("label table sidecar not found", str(path))
        return cls.from_json(path.read_text(), str(path))

    @classmethod
    def for_labels(cls, labels: np.ndarray, targets: dict[int, int] | None = None) -> LabelTable:
        """A table for a bare label map: every label generation-only unless given a target."""
        targets = targets or {}
        entries = []
        for lab in np.unique(labels).tolist():
            tissue = "air" if lab == 0 else "unknown"
            entries.append(LabelEntry(int(lab), "background" if lab == 0 else f"label {lab}", tissue, targets.get(lab, 0)))
        return cls(tuple(entries))


def sidecar_path(label_path: str | Path) -> Path:
    """`case.nii.gz` -> `case.json` (the label table beside a generation label map)."""
    p = Path(label_path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(name + ".json")
