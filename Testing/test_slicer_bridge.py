"""The library <-> MRML bridge, against the REAL MRML classes of the PyPI package ``slicer-core``.

Files written through Slicer's own storage classes are read back independently: ``.seg.nrrd``
with ``slicerio``, volumes with the library's SimpleITK reader, ``.mrk.json`` with ``json`` and
table CSVs with ``csv`` (slicerio has no reader for those two formats).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from SpineSynthSegLib import slicer_bridge as bridge
from SpineSynthSegLib.io import Volume, read_volume

try:
    import slicer

    HAVE_MRML = hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkSlicerSegmentationsModuleLogic")
except ImportError:
    HAVE_MRML = False

needs_mrml = pytest.mark.skipif(
    not HAVE_MRML, reason="slicer-core (Kitware's MRML classes without Qt) is not installed: pip install slicer-core slicerio"
)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rz @ Ry @ Rx (extrinsic x-y-z rotation, radians)."""
    return Rotation.from_euler("xyz", [ax, ay, az]).as_matrix()


@pytest.fixture
def oblique() -> Volume:
    """An oblique, anisotropic float volume with distinct voxel values (shape 7 x 9 x 5)."""
    rng = np.random.default_rng(0)
    array = rng.permutation(7 * 9 * 5).reshape(7, 9, 5).astype(np.float32)
    return Volume(array, (0.7, 1.3, 3.1), (12.5, -40.0, 7.25), _rotation(0.3, -0.5, 0.8))


def _levels(shape=(40, 24, 16)) -> np.ndarray:
    lab = np.zeros(shape, np.int16)
    lab[4:12, 6:18, 4:12] = 22  # L3
    lab[13:16, 6:18, 4:12] = 122  # L3-L4 disc
    lab[17:26, 6:18, 4:12] = 23  # L4
    return lab


@pytest.fixture
def mrml():
    if not HAVE_MRML:
        pytest.skip("slicer-core is not installed")
    return bridge.standalone_scene()


def test_bridge_imports_without_slicer():
    code = ("import sys, SpineSynthSegLib.slicer_bridge; "
            "bad = [m for m in ('slicer', 'vtk', 'vtkmodules', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_terminology_table():
    assert bridge.terminology_entry("L3").split("~")[2] == "SCT^36470004^L3 vertebra"
    assert bridge.terminology_entry("L4-L5").split("~")[2] == "SCT^84020006^L4/L5 disc"
    assert bridge.terminology_entry("disc").split("~")[2] == "SCT^360499006^Intervertebral disc"
    assert bridge.terminology_entry("T13") is None
    assert [bridge.label_from_name(n) for n in ("L3", "l3-l4", "T12-L1", "vertebral body")] == [22, 122, 119, None]


# ----------------------------------------------------------------------------- volumes


@needs_mrml
def test_oblique_volume_round_trip(mrml, oblique, tmp_path):
    node = bridge.volume_to_node(mrml.scene, oblique, "oblique")
    assert node.GetClassName() == "vtkMRMLScalarVolumeNode"
    np.testing.assert_allclose(node.GetSpacing(), oblique.spacing, atol=1e-9)
    np.testing.assert_allclose(bridge._numpy_matrix(_ijk_to_ras(node)), oblique.affine_ras, atol=1e-9)
    # slicer.util.arrayFromVolume shows the voxels as [k, j, i]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), oblique.array.transpose(2, 1, 0))
    back = bridge.node_to_volume(node)
    np.testing.assert_array_equal(back.array, oblique.array)
    assert not back.geometry_mismatch(oblique, tol=1e-9)
    # Slicer's NRRD writer and the library's SimpleITK reader agree on every voxel's position.
    path = bridge.save_node(node, tmp_path / "oblique.nrrd")
    disk = read_volume(path)
    np.testing.assert_array_equal(disk.array, oblique.array)
    np.testing.assert_allclose(disk.affine_ras, oblique.affine_ras, atol=1e-5)


def _ijk_to_ras(node):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    m = vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m


@needs_mrml
def test_voxel_world_positions_match(mrml, oblique):
    node = bridge.volume_to_node(mrml.scene, oblique, "oblique")
    m = _ijk_to_ras(node)
    for ijk in [(0, 0, 0), (6, 8, 4), (3, 1, 2)]:
        ras = m.MultiplyPoint((*map(float, ijk), 1.0))[:3]
        np.testing.assert_allclose(ras, (oblique.affine_ras @ [*ijk, 1.0])[:3], atol=1e-9)
        lps = oblique.affine @ [*ijk, 1.0]
        np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)


@needs_mrml
def test_node_under_linear_transform_reads_in_world(mrml, oblique):
    from vtkmodules.vtkCommonMath import vtkMatrix4x4

    node = bridge.volume_to_node(mrml.scene, oblique, "moved")
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    shift = vtkMatrix4x4()
    shift.SetElement(0, 3, 10.0)
    shift.SetElement(2, 3, -5.0)
    transform.SetMatrixTransformToParent(shift)
    node.SetAndObserveTransformNodeID(transform.GetID())
    world = bridge.node_to_volume(node)
    np.testing.assert_allclose(world.affine_ras[:3, 3], oblique.affine_ras[:3, 3] + [10.0, 0.0, -5.0], atol=1e-9)
    local = bridge.node_to_volume(node, world=False)
    np.testing.assert_allclose(local.affine_ras, oblique.affine_ras, atol=1e-9)


@needs_mrml
def test_labelmap_node_keeps_integers(mrml, oblique):
    vol = oblique.with_array(_levels((7, 9, 5)).astype(np.int64) * 0 + 3)
    node = bridge.volume_to_node(mrml.scene, vol, "labels", labelmap=True)
    assert node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    back = bridge.node_to_volume(node)
    assert back.array.dtype == np.int32 and (back.array == 3).all()


# ----------------------------------------------------------------------------- segmentations


def _labels_at_world(seg: dict, vol: Volume) -> np.ndarray:
    """Labels of a slicerio segmentation resampled (nearest) at ``vol``'s voxel centres."""
    ijk_to_lps = np.asarray(seg["ijkToLPS"])
    voxels = seg["voxels"]
    lps = np.einsum("ab,...b->...a", vol.affine[:3, :3], np.moveaxis(np.indices(vol.shape), 0, -1)) + vol.affine[:3, 3]
    idx = np.rint((lps - ijk_to_lps[:3, 3]) @ np.linalg.inv(ijk_to_lps[:3, :3]).T).astype(int)
    inside = np.all((idx >= 0) & (idx < voxels.shape), axis=-1)
    out = np.zeros(vol.shape, np.int32)
    out[inside] = voxels[tuple(idx[inside].T)]
    value_of = {s["labelValue"]: s for s in seg["segments"]}
    return np.vectorize(lambda v: int(value_of[v]["tags"][bridge.LABEL_TAG]) if v else 0)(out)


@needs_mrml
def test_instance_segmentation_names_colours_terminology(mrml, oblique, tmp_path):
    vol = Volume(_levels(), (0.9, 1.1, 2.5), oblique.origin, oblique.direction)
    image = bridge.volume_to_node(mrml.scene, vol.with_array(vol.array.astype(np.float32)), "image")
    node = bridge.labels_to_segmentation(mrml.scene, vol, name="levels", reference=image)
    seg = node.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    assert names == ["L3", "L3-L4", "L4"]  # cranio-caudal, each vertebra followed by its disc
    l3 = seg.GetNthSegment(0)
    assert bridge.segment_tag(l3, bridge.LABEL_TAG) == "22"
    assert "SCT^36470004^L3 vertebra" in l3.GetTerminology()
    assert "SCT^62551000^L3/L4 disc" in seg.GetNthSegment(1).GetTerminology()
    np.testing.assert_allclose(l3.GetColor(), bridge.label_color(22), atol=1e-6)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # no temporary node left
    # back to a label map on the reference grid
    back = bridge.segmentation_to_volume(node, reference=image)
    np.testing.assert_array_equal(back.array, vol.array)
    assert not back.geometry_mismatch(vol, tol=1e-6)
    # the .seg.nrrd written by Slicer, read with slicerio
    import slicerio

    path = bridge.save_node(node, tmp_path / "levels.seg.nrrd")
    disk = slicerio.read_segmentation(str(path))
    by_name = {s["name"]: s for s in disk["segments"]}
    assert set(by_name) == {"L3", "L3-L4", "L4"}
    assert by_name["L4"]["terminology"]["type"] == ["SCT", "11994002", "L4 vertebra"]
    assert by_name["L3-L4"]["terminology"]["category"] == ["SCT", "123037004", "Anatomical Structure"]
    np.testing.assert_allclose(by_name["L3"]["color"], bridge.label_color(22), atol=1e-5)
    np.testing.assert_allclose(disk["ijkToLPS"][:3, :3], vol.affine[:3, :3], atol=1e-5)  # same axes (LPS)
    np.testing.assert_array_equal(_labels_at_world(disk, vol), vol.array)


@needs_mrml
def test_semantic_segmentation(mrml, oblique):
    sem = np.zeros((12, 10, 6), np.uint8)
    sem[2:5, 2:8, 1:5] = 1
    sem[6:8, 2:8, 1:5] = 2
    vol = oblique.with_array(np.zeros((7, 9, 5), np.uint8))
    vol = Volume(sem, (1.0, 1.0, 2.0), vol.origin, vol.direction)
    node = bridge.labels_to_segmentation(mrml.scene, vol, semantic=True)
    seg = node.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(2)] == ["vertebral body", "disc"]
    assert "SCT^360499006^Intervertebral disc" in seg.GetNthSegment(1).GetTerminology()
    np.testing.assert_array_equal(bridge.segmentation_to_volume(node).array, sem)


@needs_mrml
def test_user_segmentation_values_from_names(mrml):
    """A segmentation made in Slicer (segments named 'L3', 'L3-L4', no tags) maps back to our ids."""
    vol = Volume(_levels(), (1.0, 1.0, 1.0))
    lab = vol.with_array(np.select([vol.array == 22, vol.array == 122, vol.array == 23], [5, 9, 7], 0))
    node = bridge.labels_to_segmentation(mrml.scene, lab, names={5: "L3", 9: "L3-L4", 7: "L4"})
    seg = node.GetSegmentation()
    for i in range(seg.GetNumberOfSegments()):
        seg.GetNthSegment(i).RemoveTag(bridge.LABEL_TAG)
    np.testing.assert_array_equal(bridge.segmentation_to_volume(node).array, vol.array)
    np.testing.assert_array_equal(bridge.segmentation_to_volume(node, values="label_value").array, lab.array)


# ----------------------------------------------------------------------------- measurements


@pytest.fixture(scope="module")
def measurements() -> dict:
    from SpineSynthSegLib.measure import measure_volume
    from SpineSynthSegLib.measure_report import to_json
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets

    cfg = PhantomConfig(shape=(96, 64, 32), spacing=(2.0, 2.0, 2.0), wedge_fracture_prob=1.0,
                        wedge_fracture_loss=(0.45, 0.5))
    vol, table = generate_phantom(cfg, seed=3)
    doc = to_json(measure_volume(phantom_targets(vol, table)), {"segmentation": "phantom"})
    return json.loads(json.dumps(doc))  # as read from measurements.json


def test_suspicious_levels(measurements):
    flagged = bridge.suspicious_levels(measurements)
    assert flagged and all("Genant" in r or "Meyerding" in r for r in flagged.values())
    doc = {"levels": [{"level": "L4", "values": {"genant_grade": 0, "meyerding_grade": 1, "slip_percent": 12.0}}]}
    assert bridge.suspicious_levels(doc) == {"L4": "Meyerding 1 (12 % slip)"}


@needs_mrml
def test_measurement_lines(mrml, measurements, tmp_path):
    lines = bridge.measurement_lines(mrml.scene, measurements, folder="Phantom measurements")
    l3 = {n.GetName(): n for n in lines["L3"]}
    assert {"L3 anterior height", "L3 middle height", "L3 posterior height"} <= set(l3)
    assert any(n.GetName() == "L3-L4 disc middle height" for n in lines["L3-L4"])
    item = next(i for i in measurements["levels"] if i["level"] == "L3")["measurements"]["anterior_height_mm"]
    line = l3["L3 anterior height"]
    for k, p in enumerate(item["points_ras"]):
        np.testing.assert_allclose(line.GetNthControlPointPositionWorld(k), p, atol=1e-6)
    assert line.GetLineLengthWorld() == pytest.approx(item["value"], abs=2e-3)
    assert line.GetAttribute(bridge.LEVEL_ATTRIBUTE) == "L3"
    # one subject-hierarchy folder per level under the parent folder
    sh = mrml.scene.GetSubjectHierarchyNode()
    parent = sh.GetItemParent(sh.GetItemByDataNode(line))
    assert sh.GetItemName(parent) == "L3"
    assert sh.GetItemName(sh.GetItemParent(parent)) == "Phantom measurements"
    # suspicious levels are red
    flagged = next(iter(bridge.suspicious_levels(measurements)))
    colour = lines[flagged][0].GetDisplayNode().GetSelectedColor()
    np.testing.assert_allclose(colour, bridge._SUSPICIOUS_COLOUR, atol=1e-6)
    # the .mrk.json Slicer writes (LPS in the file) holds the same end points
    path = bridge.save_node(line, tmp_path / "L3_anterior_height.mrk.json")
    markup = json.loads(path.read_text())["markups"][0]
    assert markup["type"] == "Line" and markup["coordinateSystem"] == "LPS"
    for cp, p in zip(markup["controlPoints"], item["points_ras"]):
        np.testing.assert_allclose(cp["position"], [-p[0], -p[1], p[2]], atol=1e-6)
    # measuring again first removes the folder, its sub-folders and lines
    n = sum(len(v) for v in lines.values())
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == n
    assert bridge.remove_folder(mrml.scene, "Phantom measurements") == n
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == 0
    assert not sh.GetItemChildWithName(sh.GetSceneItemID(), "Phantom measurements")


@needs_mrml
def test_measurements_table_and_csv(mrml, measurements, tmp_path):
    node = bridge.measurements_table(mrml.scene, measurements)
    table = node.GetTable()
    assert table.GetNumberOfRows() == len(measurements["levels"])
    names = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert names[:2] == ["level", "kind"] and names[-3:] == ["status", "reason", "flag"]
    assert {"anterior_height_mm", "genant_grade", "slip_percent"} <= set(names)
    assert node.GetColumnUnitLabel("anterior_height_mm") == "mm"
    assert node.GetColumnTitle("anterior_height_mm") == "anterior height (mm)"
    flagged = bridge.suspicious_levels(measurements)
    path = bridge.save_node(node, tmp_path / "measurements.csv")
    rows = list(csv.DictReader(path.open()))
    assert [r["level"] for r in rows] == [i["level"] for i in measurements["levels"]]
    for row, item in zip(rows, measurements["levels"]):
        assert row["flag"] == flagged.get(item["level"], "")
        for key, value in item["values"].items():
            if value is None:
                assert math.isnan(float(row[key]))
            else:
                assert float(row[key]) == pytest.approx(value, abs=1e-6)
    assert (tmp_path / "measurements.schema.csv").exists()


# ----------------------------------------------------------------------------- preview


@pytest.fixture(scope="module")
def phantom():
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom

    return generate_phantom(PhantomConfig(shape=(64, 48, 24), spacing=(3.0, 2.0, 2.0)), seed=0)


def test_contrast_preview_physics(phantom):
    vol, table = phantom
    t1w = bridge.contrast_preview(vol, table, bridge.PreviewSettings(tr=500, te=12))
    t2w = bridge.contrast_preview(vol, table, bridge.PreviewSettings(tr=4000, te=100))
    again = bridge.contrast_preview(vol, table, bridge.PreviewSettings(tr=500, te=12))
    assert t1w.shape == vol.shape and not t1w.geometry_mismatch(vol)
    assert t1w.array.dtype == np.float32 and 0.0 <= t1w.array.min() and t1w.array.max() <= 1.0
    np.testing.assert_array_equal(t1w.array, again.array)
    csf = next(e.id for e in table.entries if e.tissue == "csf")
    fat = next(e.id for e in table.entries if e.tissue == "fat")
    mean = {k: {t: float(img.array[vol.array == t].mean()) for t in (csf, fat)} for k, img in (("t1", t1w), ("t2", t2w))}
    assert mean["t1"][csf] < mean["t1"][fat]  # CSF dark on T1-weighted
    assert mean["t2"][csf] > mean["t1"][csf] / max(mean["t1"][fat], 1e-6) * mean["t2"][fat]  # brighter on T2w


def test_contrast_preview_random_full_chain(phantom):
    vol, table = phantom
    a = bridge.contrast_preview(vol, table, bridge.PreviewSettings(mode="random", seed=1, full_chain=True))
    b = bridge.contrast_preview(vol, table, bridge.PreviewSettings(mode="random", seed=2, full_chain=True))
    assert a.shape == vol.shape and not np.array_equal(a.array, b.array)


def test_qmri_preview_spin_echo():
    t1 = Volume(np.full((4, 4, 3), 800.0, np.float32))
    t1.array[0] = 300.0
    t2, pd = t1.with_array(np.full((4, 4, 3), 80.0, np.float32)), t1.with_array(np.ones((4, 4, 3), np.float32))
    out = bridge.qmri_preview(t1, t2, pd, bridge.PreviewSettings(sequence="spin_echo", tr=500, te=10))
    assert out.array[0].mean() > out.array[1].mean()  # short T1 is bright on T1-weighted spin echo
    with pytest.raises(ValueError, match="fat maps"):
        bridge.qmri_preview(t1, t2, pd, bridge.PreviewSettings(sequence="water_fat"))
