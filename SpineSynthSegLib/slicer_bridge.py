"""Bridge between the library and 3D Slicer's MRML scene (volumes, segmentations, markups, tables).

Every MRML-facing function takes the scene (or a node) as an argument and imports ``slicer`` /
``vtk`` lazily, so this module imports without Slicer and runs both inside Slicer and under
pytest with the PyPI package ``slicer-core`` (`standalone_scene` builds a scene with the logics
that Slicer's application would register).

Geometry. A library `Volume` holds its array in ITK index order (i, j, k) and ``affine_ras`` maps
(i, j, k) to RAS millimetres. MRML's IJKToRAS matrix is the same mapping, but a VTK image stores
its voxels with i varying fastest, so ``slicer.util.arrayFromVolume`` shows them as ``[k, j, i]``.
`volume_to_node` / `node_to_volume` convert between the two without resampling (oblique and
anisotropic grids are kept exactly); a node under a linear transform is read in world
coordinates.

Segments. `labels_to_segmentation` makes one named, coloured segment per label (vertebrae 'L3',
discs 'L3-L4', or the semantic classes) with a standard terminology entry from `TERMINOLOGY`,
ordered cranio-caudally, referencing the input's geometry. The SNOMED CT codes are those of
DICOM PS3.16 CID 7603 (Vertebra) and CID 7604 (Intervertebral Disc), the codes the Slicer
TotalSegmentator extension uses for vertebrae, SCT 54735007 for the sacrum and SCT 360499006
(Intervertebral disc) for the semantic disc class. T13, L6 and the semantic vertebral-body class
have no verified code here and get no terminology entry (name and colour only).

Measurements. `measurement_lines` turns a ``measurements.json`` document
(`measure_report.to_json`: end points in RAS mm) into markups line nodes named like
'L3 anterior height', grouped in one subject-hierarchy folder per level under a parent folder;
`measurements_table` makes a table node with every value, grade and a 'flag' column for the
suspicious levels (Genant grade >= 1 or Meyerding grade >= 1, `suspicious_levels`).

Files. `save_node` writes a node with Slicer's own storage classes: ``.seg.nrrd``
(segmentation), ``.mrk.json`` (markups, LPS coordinates in the file as Slicer writes them),
``.csv`` (+ ``.schema.csv``) for tables and NRRD/NIfTI for volumes.

Panel computations (no MRML): `contrast_preview` and `qmri_preview` compute the Slicer module's
synthetic-contrast preview with `synthesis.pipeline` and the signal equations of
`synthesis.physics`.
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import Volume, reorient
from .labels import (
    CRANIOCAUDAL_ORDER,
    DISC_OFFSET,
    SEMANTIC_CLASSES,
    VERTEBRA_IDS,
    LabelEntry,
    LabelTable,
    disc_label,
    is_disc,
    is_vertebra,
    vertebra_name,
)

log = logging.getLogger(__name__)

LABEL_TAG = "SpineSynthSeg.Label"  #: segment tag / node attribute holding the output label id
TABLE_ATTRIBUTE = "SpineSynthSeg.LabelTable"  #: node attribute holding a generation LabelTable JSON
LEVEL_ATTRIBUTE = "SpineSynthSeg.Level"  #: markups line attribute: the level ('L3', 'L3-L4')
MEASUREMENT_ATTRIBUTE = "SpineSynthSeg.Measurement"  #: markups line attribute: the JSON key

# ----------------------------------------------------------------------------- terminology

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


# ----------------------------------------------------------------------------- scene set-up


@dataclass
class StandaloneScene:
    """A scene with the logics that Slicer's application registers (for use outside Slicer)."""

    scene: Any
    app_logic: Any
    segmentations_logic: Any
    subject_hierarchy_logic: Any
    markups_logic: Any


def standalone_scene() -> StandaloneScene:
    """A new MRML scene set up like Slicer's (for tests and scripts run with ``slicer-core``).

    Slicer's application creates the application logic, the default colour tables and the
    segmentations, subject-hierarchy and markups logics; segmentation nodes need the
    segmentations logic set on the scene. Keep the returned object alive with the scene.
    """
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLScene(scene)
    seg_logic.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Segmentations", seg_logic)
    sh_logic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
    sh_logic.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLScene(scene)
    markups.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Markups", markups)
    return StandaloneScene(scene, app, seg_logic, sh_logic, markups)


# ----------------------------------------------------------------------------- volumes


def _vtk_matrix(affine: np.ndarray):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(affine[r, c]))
    return m


def _numpy_matrix(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_dtype(array: np.ndarray) -> np.ndarray:
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64):  # MRML label maps and most filters use <= 32 bits
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise InputError(f"label values beyond int32 cannot go into a volume node ({array.min()}..{array.max()})")
        return array.astype(np.int32)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def volume_to_node(scene, vol: Volume, name: str = "volume", labelmap: bool = False, node=None):
    """Put a `Volume` into a scalar (or label map) volume node, with its exact geometry.

    Args:
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        vol: array in (i, j, k) order; ``vol.affine_ras`` becomes the node's IJKToRAS matrix.
        name: name of a new node.
        labelmap: create a vtkMRMLLabelMapVolumeNode instead of a vtkMRMLScalarVolumeNode.
        node: an existing volume node to update instead (keeps its name and display).

    Returns:
        The node (added to ``scene``, with default display nodes).
    """
    from vtkmodules.util import numpy_support
    from vtkmodules.vtkCommonDataModel import vtkImageData

    array = _vtk_dtype(np.asarray(vol.array))
    image = vtkImageData()
    image.SetDimensions(*(int(n) for n in array.shape))
    # VTK stores i fastest: Fortran order of the (i, j, k) array, i.e. C order of [k, j, i].
    scalars = numpy_support.numpy_to_vtk(np.ravel(array, order="F"), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    if node is None:
        cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
        node = scene.AddNewNodeByClass(cls, name)
    node.SetIJKToRASMatrix(_vtk_matrix(vol.affine_ras))
    node.SetAndObserveImageData(image)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _world_matrix(node) -> np.ndarray:
    """Matrix from the node's local RAS to world RAS (identity without a parent transform)."""
    parent = node.GetParentTransformNode()
    if parent is None:
        return np.eye(4)
    if not parent.IsTransformToWorldLinear():
        raise InputError(f"{node.GetName()}: a non-linear transform is applied; harden it first")
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(m)
    return _numpy_matrix(m)


def node_to_volume(node, world: bool = True) -> Volume:
    """A `Volume` (array in (i, j, k) order, a copy) from a scalar or label map volume node.

    Args:
        world: apply a linear parent transform so the geometry is in world RAS.
    """
    from vtkmodules.util import numpy_support

    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise InputError("the volume node holds no image data", node.GetName() if node is not None else None)
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"expected a scalar volume, got {image.GetNumberOfScalarComponents()} components", node.GetName())
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    array = np.array(flat.reshape(dims[::-1]).transpose(2, 1, 0))  # [k, j, i] -> (i, j, k), copied
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    affine = _numpy_matrix(m)
    ext = image.GetExtent()
    if ext[0] or ext[2] or ext[4]:  # image data whose extent does not start at 0
        affine[:3, 3] = affine[:3] @ np.array([ext[0], ext[2], ext[4], 1.0])
    if world:
        affine = _world_matrix(node) @ affine
    return Volume.from_affine_ras(array, affine)


# ----------------------------------------------------------------------------- segmentations


def _segment_order(labels: Iterable[int], semantic: bool) -> list[int]:
    """Cranio-caudal order (each vertebra followed by its disc) for instances; ascending otherwise."""
    labels = sorted({int(v) for v in labels})
    if semantic:
        return labels
    rank = {v: k for k, v in enumerate(CRANIOCAUDAL_ORDER)}

    def key(v: int) -> tuple[int, int]:
        base = v - DISC_OFFSET if is_disc(v) else v
        return (2 * rank[base] + is_disc(v), v) if base in rank else (10_000, v)

    return sorted(labels, key=key)


def labels_to_segmentation(scene, vol: Volume, semantic: bool = False, name: str = "segmentation",
                           reference=None, node=None, names: Mapping[int, str] | None = None):
    """A segmentation node with one named, coloured segment (with terminology) per label.

    Args:
        scene: the MRML scene.
        vol: label map; instance ids (vertebrae 1-28, discs 100 + id) unless ``semantic``.
        semantic: the labels are semantic classes (1 vertebral body, 2 disc, ...).
        name: name of a new node.
        reference: a volume node whose geometry the segmentation references (default: the
            label map's own grid).
        node: an existing segmentation node to fill (its segments are replaced).
        names: override segment names per label.

    Returns:
        The segmentation node; each segment carries the tag `LABEL_TAG` with its label id.
    """
    import slicer

    labels = [int(v) for v in np.unique(vol.array) if v != 0]
    temp = volume_to_node(scene, vol, "__spinesynthseg_labels", labelmap=True)
    try:
        if node is None:
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            node.CreateDefaultDisplayNodes()
        else:
            node.GetSegmentation().RemoveAllSegments()
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference if reference is not None else temp)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(temp, node):
            raise RuntimeError("importing the label map into the segmentation node failed")
    finally:
        scene.RemoveNode(temp)
    seg = node.GetSegmentation()
    by_label = {}
    for i in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(i)
        by_label[int(segment.GetLabelValue())] = seg.GetNthSegmentID(i)
    for index, label in enumerate(_segment_order(labels, semantic)):
        segment_id = by_label[label]
        segment = seg.GetSegment(segment_id)
        text = (names or {}).get(label) or label_name(label, semantic)
        segment.SetName(text)
        segment.SetNameAutoGenerated(False)
        segment.SetColor(*label_color(label, semantic))
        segment.SetColorAutoGenerated(False)
        segment.SetTag(LABEL_TAG, str(label))
        entry = terminology_entry(("disc" if label == 2 else "") if semantic else label_name(label))
        if entry:
            segment.SetTerminology(entry)
        seg.SetSegmentIndex(segment_id, index)
    node.SetAttribute(LABEL_TAG + ".Kind", "semantic" if semantic else "instances")
    return node


def segment_tag(segment, name: str) -> str | None:
    """The value of a segment tag (vtkSegment::GetTag fills a reference), None when absent."""
    from vtkmodules.vtkCommonCore import reference

    value = reference("")
    return str(value) if segment.GetTag(name, value) else None


def _segment_value(segment, mode: str, fallback: int) -> int:
    if mode == "label_value":
        return int(segment.GetLabelValue())
    if mode == "index":
        return fallback
    tag = segment_tag(segment, LABEL_TAG) or ""
    if tag.strip().isdigit():
        return int(tag)
    parsed = label_from_name(segment.GetName())
    return parsed if parsed is not None else int(segment.GetLabelValue())


def segmentation_to_volume(node, reference=None, values: str = "auto") -> Volume:
    """A label map `Volume` from a segmentation node, on the reference (or its own) grid.

    Args:
        node: vtkMRMLSegmentationNode.
        reference: a volume node giving the output grid (default: the segmentation's reference
            geometry, else the union of its segments).
        values: label value of each segment: 'auto' (the `LABEL_TAG` tag, else a level name like
            'L3' / 'L3-L4', else the segment's label value), 'label_value' (as stored, e.g. from a
            TotalSegmentator .seg.nrrd: then convert with `measure_report.convert`), or 'index'
            (1, 2, ... in segment order).
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkStringArray

    seg = node.GetSegmentation()
    n = seg.GetNumberOfSegments()
    if n == 0:
        raise InputError("the segmentation has no segments", node.GetName())
    if values not in ("auto", "label_value", "index"):
        raise ValueError(f"values must be 'auto', 'label_value' or 'index', got {values!r}")
    ids = vtkStringArray()
    lut = np.zeros(n + 1, np.int32)
    for i in range(n):
        ids.InsertNextValue(seg.GetNthSegmentID(i))
        lut[i + 1] = _segment_value(seg.GetNthSegment(i), values, i + 1)
    scene = node.GetScene()
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__spinesynthseg_export")
    try:
        geometry = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
        has_geometry = bool(seg.GetConversionParameter(geometry)) if reference is None else True
        mode = slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY if has_geometry else \
            slicer.vtkSegmentation.EXTENT_UNION_OF_SEGMENTS
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(node, ids, temp, reference, mode):
            raise RuntimeError(f"exporting the segments of {node.GetName()} failed")
        vol = node_to_volume(temp, world=False)
    finally:
        scene.RemoveNode(temp)
    index = vol.array.astype(np.int64)
    return vol.with_array(lut[np.clip(index, 0, n)])


# ----------------------------------------------------------------------------- measurements

_LINE_COLOURS = {"height": (1.0, 0.86, 0.0), "disc": (0.0, 0.9, 0.47), "distance": (0.0, 0.78, 1.0),
                 "slip": (1.0, 0.31, 0.78)}
_SUSPICIOUS_COLOUR = (1.0, 0.1, 0.1)


def measurement_title(level: str, key: str) -> str:
    """'L3 anterior height' for ('L3', 'anterior_height_mm'); 'L3-L4 disc middle height'."""
    words = key
    for suffix in ("_mm", "_percent"):
        words = words.removesuffix(suffix)
    return f"{level} {words.replace('_', ' ')}"


def _kind(key: str) -> str:
    return "slip" if key.startswith("slip") else "distance" if "distance" in key else \
        "disc" if key.startswith("disc") else "height"


def suspicious_levels(doc: Mapping) -> dict[str, str]:
    """Levels to highlight: Genant grade >= 1 (height loss) or Meyerding grade >= 1 (slip).

    Returns:
        level name -> reason ('Genant 2 (31 % height loss)', 'Meyerding 1 (14 % slip)').
    """
    out = {}
    for item in doc.get("levels", []):
        values = item.get("values", {})
        reasons = []
        genant, meyerding = values.get("genant_grade"), values.get("meyerding_grade")
        if genant is not None and genant >= 1:
            loss = values.get("height_loss_percent")
            reasons.append(f"Genant {int(genant)}" + (f" ({loss:.0f} % height loss)" if loss is not None else ""))
        if meyerding is not None and meyerding >= 1:
            slip = values.get("slip_percent")
            reasons.append(f"Meyerding {int(meyerding)}" + (f" ({slip:.0f} % slip)" if slip is not None else ""))
        if reasons:
            out[item["level"]] = "; ".join(reasons)
    return out


def load_measurements(path: str | Path) -> dict:
    """Read a ``measurements.json`` (format 'spinesynthseg-measurements/1')."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the measurements: {err}", str(path)) from err
    if not isinstance(doc, dict) or "levels" not in doc:
        raise InputError("not a measurements.json document (no 'levels')", str(path))
    return doc


def _sh_folder(sh, parent: int, name: str) -> int:
    for i in range(sh.GetNumberOfItemChildren(parent)):
        child = _nth_child(sh, parent, i)
        if sh.GetItemName(child) == name and sh.IsItemLevel(child, "Folder"):
            return child
    return sh.CreateFolderItem(parent, name)


def _nth_child(sh, parent: int, i: int) -> int:
    from vtkmodules.vtkCommonCore import vtkIdList

    ids = vtkIdList()
    sh.GetItemChildren(parent, ids)
    return ids.GetId(i)


def remove_folder(scene, name: str) -> int:
    """Remove a top-level subject-hierarchy folder, its sub-folders and their nodes; returns the node count.

    The data nodes are removed from the scene first, then the (empty) folder items; this avoids
    relying on ``RemoveItem(removeDataNode=True)``, which does not return under ``slicer-core``.
    """
    from vtkmodules.vtkCommonCore import vtkIdList

    sh = scene.GetSubjectHierarchyNode()
    item = sh.GetItemChildWithName(sh.GetSceneItemID(), name)
    if not item:
        return 0
    ids = vtkIdList()
    sh.GetItemChildren(item, ids, True)
    nodes = [sh.GetItemDataNode(ids.GetId(i)) for i in range(ids.GetNumberOfIds())]
    nodes = [n for n in nodes if n is not None]
    for node in nodes:
        scene.RemoveNode(node)
    sh.RemoveItem(item, False, True)
    return len(nodes)


def measurement_lines(scene, doc: Mapping, folder: str = "Spine measurements", lock: bool = True) -> dict[str, list]:
    """Markups line nodes for every measurement of a measurements.json document.

    Each line is named like 'L3 anterior height' (`measurement_title`), carries the attributes
    `LEVEL_ATTRIBUTE` / `MEASUREMENT_ATTRIBUTE`, is coloured by kind (heights yellow, disc
    heights green, distances cyan, slip magenta; suspicious levels red) and sits in the subject
    hierarchy folder ``folder / <level>``.

    Returns:
        level name -> its line nodes (in document order).
    """
    suspicious = suspicious_levels(doc)
    sh = scene.GetSubjectHierarchyNode()
    root = _sh_folder(sh, sh.GetSceneItemID(), folder)
    out: dict[str, list] = {}
    for item in doc.get("levels", []):
        level = item["level"]
        lines = []
        for key, m in item.get("measurements", {}).items():
            points = m.get("points_ras")
            if not points or len(points) != 2:
                continue
            line = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", measurement_title(level, key))
            line.CreateDefaultDisplayNodes()
            for p in points:
                line.AddControlPoint(float(p[0]), float(p[1]), float(p[2]), "")
            line.SetAttribute(LEVEL_ATTRIBUTE, level)
            line.SetAttribute(MEASUREMENT_ATTRIBUTE, key)
            if m.get("value") is not None:
                line.SetDescription(f"{key} = {m['value']}")
            line.SetLocked(bool(lock))
            display = line.GetDisplayNode()
            if display is not None:
                colour = _SUSPICIOUS_COLOUR if level in suspicious else _LINE_COLOURS[_kind(key)]
                display.SetSelectedColor(*colour)
                display.SetColor(*colour)
                display.SetPropertiesLabelVisibility(True)
            item_id = sh.GetItemByDataNode(line) or sh.CreateItem(root, line)
            sh.SetItemParent(item_id, _sh_folder(sh, root, level))
            lines.append(line)
        out[level] = lines
    return out


def measurements_table(scene, doc: Mapping, name: str = "Spine measurements", node=None):
    """A table node: one row per level, every value (NaN where not measurable), status, flag.

    Columns: ``level``, ``kind``, the numeric columns of the document's ``values`` (unit labels
    mm / % set from the column names), ``status``, ``reason`` and ``flag`` (the
    `suspicious_levels` reason, empty otherwise). Row ``r`` is ``doc['levels'][r]``.
    """
    from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray

    levels = list(doc.get("levels", []))
    numeric: list[str] = []
    for item in levels:
        numeric += [k for k in item.get("values", {}) if k not in numeric]
    suspicious = suspicious_levels(doc)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    node.RemoveAllColumns()
    table = node.GetTable()
    columns = {}
    for col in ("level", "kind", *numeric, "status", "reason", "flag"):
        array = vtkDoubleArray() if col in numeric else vtkStringArray()
        array.SetName(col)
        array.SetNumberOfTuples(len(levels))
        table.AddColumn(array)
        columns[col] = array
    for r, item in enumerate(levels):
        text = {"level": item.get("level", ""), "kind": item.get("kind", ""), "status": item.get("status", ""),
                "reason": item.get("reason", ""), "flag": suspicious.get(item.get("level"), "")}
        for col, value in text.items():
            columns[col].SetValue(r, str(value))
        for col in numeric:
            value = item.get("values", {}).get(col)
            columns[col].SetValue(r, float(value) if value is not None else math.nan)
    for col in columns:
        unit = "mm" if col.endswith("_mm") else "%" if col.endswith("_percent") else ""
        if unit:
            node.SetColumnUnitLabel(col, unit)
        node.SetColumnTitle(col, measurement_title("", col).strip() + (f" ({unit})" if unit else ""))
    if hasattr(node, "SetUseColumnTitleAsColumnHeader"):  # headers show the titles; row r is level r
        node.SetUseColumnTitleAsColumnHeader(True)
    node.Modified()
    return node


# ----------------------------------------------------------------------------- files

_STORAGE = {
    "vtkMRMLSegmentationNode": "vtkMRMLSegmentationStorageNode",
    "vtkMRMLMarkupsLineNode": "vtkMRMLMarkupsJsonStorageNode",
    "vtkMRMLMarkupsFiducialNode": "vtkMRMLMarkupsJsonStorageNode",
    "vtkMRMLTableNode": "vtkMRMLTableStorageNode",
    "vtkMRMLScalarVolumeNode": "vtkMRMLVolumeArchetypeStorageNode",
    "vtkMRMLLabelMapVolumeNode": "vtkMRMLVolumeArchetypeStorageNode",
}


def save_node(node, path: str | Path) -> Path:
    """Write a node with Slicer's storage class for its type (.seg.nrrd, .mrk.json, .csv, .nrrd).

    Raises:
        InputError: unsupported node type or a failed write (names the file).
    """
    import slicer

    path = Path(path)
    cls = _STORAGE.get(node.GetClassName())
    if cls is None:
        raise InputError(f"cannot save a {node.GetClassName()}", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = node.GetScene()
    storage = getattr(slicer, cls)()
    scene.AddNode(storage)
    try:
        storage.SetFileName(str(path))
        if hasattr(storage, "SetUseCompression") and cls != "vtkMRMLTableStorageNode":
            storage.SetUseCompression(True)
        if not storage.WriteData(node):
            raise InputError("writing failed", str(path))
    finally:
        scene.RemoveNode(storage)
    return path


# ----------------------------------------------------------------------------- preview (no MRML)


@dataclass(frozen=True)
class PreviewSettings:
    """The contrast-preview panel's settings.

    Attributes:
        mode: 'random' (domain randomization) or 'physics' (signal equations).
        sequence: one of `synthesis.tissues.SEQUENCES` ('spin_echo', 'inversion_recovery',
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
    from .synthesis.tissues import SEQUENCES, PhysicsContrast, nominal_fat_t1

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
