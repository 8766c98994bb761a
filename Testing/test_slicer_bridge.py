"""The library <-> MRML bridge (volumes, segmentations), against the REAL MRML classes of ``slicer-core``.

Files written through Slicer's own storage classes are read back independently: ``.seg.nrrd``
with ``slicerio`` and volumes with the library's SimpleITK reader. The ``mrml`` fixture
(conftest.py) skips where ``slicer-core`` is not installed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from SpineSynthSegLib import slicer_bridge as bridge
from SpineSynthSegLib.io import Volume, read_volume
from SpineSynthSegLib.slicer_terminology import label_color


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


def test_slicer_modules_import_without_slicer():
    code = ("import sys, SpineSynthSegLib.slicer_bridge, SpineSynthSegLib.slicer_measurements, "
            "SpineSynthSegLib.slicer_terminology, SpineSynthSegLib.contrast_preview; "
            "bad = [m for m in ('slicer', 'vtk', 'vtkmodules', 'torch') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------------------- volumes


def test_oblique_volume_round_trip(mrml, oblique, tmp_path):
    import slicer

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


def test_voxel_world_positions_match(mrml, oblique):
    node = bridge.volume_to_node(mrml.scene, oblique, "oblique")
    m = _ijk_to_ras(node)
    for ijk in [(0, 0, 0), (6, 8, 4), (3, 1, 2)]:
        ras = m.MultiplyPoint((*map(float, ijk), 1.0))[:3]
        np.testing.assert_allclose(ras, (oblique.affine_ras @ [*ijk, 1.0])[:3], atol=1e-9)
        lps = oblique.affine @ [*ijk, 1.0]
        np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], atol=1e-9)


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
    np.testing.assert_allclose(l3.GetColor(), label_color(22), atol=1e-6)
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
    np.testing.assert_allclose(by_name["L3"]["color"], label_color(22), atol=1e-5)
    np.testing.assert_allclose(disk["ijkToLPS"][:3, :3], vol.affine[:3, :3], atol=1e-5)  # same axes (LPS)
    np.testing.assert_array_equal(_labels_at_world(disk, vol), vol.array)


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
