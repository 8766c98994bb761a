"""Bridge between the library and 3D Slicer's MRML scene: scene set-up, volumes, segmentations, files.

Every MRML-facing function takes the scene (or a node) as an argument and imports ``slicer`` /
``vtk`` lazily, so this module imports without Slicer and runs both inside Slicer and under
pytest with the PyPI package ``slicer-core`` (`standalone_scene` builds a scene with the logics
that Slicer's application would register). Measurements (markups lines, tables) are in
`slicer_measurements`, segment names / colours / terminology in `slicer_terminology`, the
contrast preview (no MRML) in `contrast_preview`.

Geometry. A library `Volume` holds its array in ITK index order (i, j, k) and ``affine_ras`` maps
(i, j, k) to RAS millimetres. MRML's IJKToRAS matrix is the same mapping, but a VTK image stores
its voxels with i varying fastest, so ``slicer.util.arrayFromVolume`` shows them as ``[k, j, i]``.
`volume_to_node` / `node_to_volume` convert between the two without resampling (oblique and
anisotropic grids are kept exactly); a node under a linear transform is read in world
coordinates.

Segments. `labels_to_segmentation` makes one named, coloured segment per label (vertebrae 'L3',
discs 'L3-L4', or the semantic classes) with a standard terminology entry
(`slicer_terminology.TERMINOLOGY`), ordered cranio-caudally, referencing the input's geometry;
`segmentation_to_volume` converts back to a label map.

Files. `save_node` writes a node with Slicer's own storage classes: ``.seg.nrrd``
(segmentation), ``.mrk.json`` (markups, LPS coordinates in the file as Slicer writes them),
``.csv`` (+ ``.schema.csv``) for tables and NRRD/NIfTI for volumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .io import Volume
from .labels import CRANIOCAUDAL_ORDER, DISC_OFFSET, is_disc
from .slicer_terminology import label_color, label_from_name, label_name, terminology_entry

LABEL_TAG = "SpineSynthSeg.Label"  #: segment tag / node attribute holding the output label id
TABLE_ATTRIBUTE = "SpineSynthSeg.LabelTable"  #: node attribute holding a generation LabelTable JSON

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


def segment_level(segment) -> int | None:
    """A segment's level id: its `LABEL_TAG` tag, else a level name ('L3', 'L3-L4'); None if neither."""
    tag = segment_tag(segment, LABEL_TAG) or ""
    if tag.strip().isdigit():
        return int(tag)
    return label_from_name(segment.GetName())


def segments_without_level(node) -> list[str]:
    """Names of the segments of a segmentation node that `segment_level` cannot place."""
    seg = node.GetSegmentation()
    segments = [seg.GetNthSegment(i) for i in range(seg.GetNumberOfSegments())]
    return [s.GetName() for s in segments if segment_level(s) is None]


def _segment_value(segment, mode: str, fallback: int) -> int:
    if mode == "label_value":
        return int(segment.GetLabelValue())
    if mode == "index":
        return fallback
    level = segment_level(segment)
    if level is not None:
        return level
    return 0 if mode == "levels" else int(segment.GetLabelValue())


def segmentation_to_volume(node, reference=None, values: str = "auto") -> Volume:
    """A label map `Volume` from a segmentation node, on the reference (or its own) grid.

    Args:
        node: vtkMRMLSegmentationNode.
        reference: a volume node giving the output grid (default: the segmentation's reference
            geometry, else the union of its segments).
        values: label value of each segment: 'auto' (the `LABEL_TAG` tag, else a level name like
            'L3' / 'L3-L4', else the segment's label value), 'levels' (as 'auto', but 0 for a
            segment that is no level), 'label_value' (as stored, e.g. from a TotalSegmentator
            .seg.nrrd: then convert with `label_converters.convert_instances`), or 'index' (1, 2, ... in
            segment order).
    """
    import slicer
    from vtkmodules.vtkCommonCore import vtkStringArray

    seg = node.GetSegmentation()
    n = seg.GetNumberOfSegments()
    if n == 0:
        raise InputError("the segmentation has no segments", node.GetName())
    if values not in ("auto", "levels", "label_value", "index"):
        raise ValueError(f"values must be 'auto', 'levels', 'label_value' or 'index', got {values!r}")
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
