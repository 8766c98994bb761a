"""The Slicer module's panel helpers (SpineSynthSeg/SpineSynthSegUtils), run outside Slicer.

They take the scene as an argument, so they run here on a standalone scene built from the real
MRML classes of ``slicer-core`` (the ``mrml`` fixture, conftest.py); what needs Slicer's GUI
(slice views, qt) is left to the module's self-test inside Slicer.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from SpineSynthSegLib.io import Volume, read_volume, write_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "SpineSynthSeg"))  # as Slicer's module path does

from SpineSynthSegUtils import Measurements, Preview, SegmentationRun


def _parameters(**changes) -> SimpleNamespace:
    """Stands for the module's parameter node, with its defaults."""
    defaults = {"previewSource": "labels", "previewLabels": None, "t1Map": None, "t2Map": None, "pdMap": None,
                "previewMode": "physics", "sequence": "spin_echo", "fieldStrength": 1.5, "repetitionTime": 500.0,
                "echoTime": 15.0, "inversionTime": 150.0, "flipAngle": 90.0, "seed": 0, "fullChain": False,
                "previewVolume": None}
    return SimpleNamespace(**{**defaults, **changes})


class _Node:
    def __init__(self, node_id):
        self.node_id = node_id

    def GetID(self):  # the MRML method name
        return self.node_id


def test_preview_description_settings_and_inputs_key():
    p = _parameters(sequence="inversion_recovery", inversionTime=160.0)
    assert Preview.previewDescription(p) == "inversion_recovery 1.5 T, TR 500 ms, TE 15.0 ms, TI 160 ms"
    assert Preview.previewDescription(_parameters(previewMode="random", seed=3, fullChain=True)) == \
        "domain randomization, seed 3, full chain"
    settings = Preview.previewSettings(_parameters(repetitionTime=4000.0, echoTime=90.0))
    assert (settings.mode, settings.tr, settings.te) == ("physics", 4000.0, 90.0)
    key = Preview.inputsKey(_parameters(previewLabels=_Node("vtkMRMLLabelMapVolumeNode1")))
    assert "vtkMRMLLabelMapVolumeNode1" in key
    assert key != Preview.inputsKey(_parameters(previewLabels=_Node("vtkMRMLLabelMapVolumeNode1"), echoTime=16.0))


def test_preview_image_of_the_phantom_node(mrml, monkeypatch):
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.phantom import PhantomConfig

    node = Preview.phantomNode(mrml.scene, 0, PhantomConfig(shape=(64, 48, 24), spacing=(3.0, 2.0, 2.0)))
    vol, table = Preview.labelsFromNode(node)
    assert table.to_json() == node.GetAttribute(bridge.TABLE_ATTRIBUTE)  # the phantom's own tissues
    image, labels = Preview.previewImage(_parameters(previewLabels=node))
    assert labels is node and image.shape == vol.shape and not image.geometry_mismatch(vol)
    with pytest.raises(ValueError, match="T1, T2 and PD"):
        Preview.previewImage(_parameters(previewSource="maps"))
    shown = []  # the slice views exist only in Slicer's application
    monkeypatch.setattr(Preview, "showPreview", lambda *args, **kwargs: shown.append((args, kwargs)))
    p = _parameters(previewLabels=node)
    first = Preview.updatePreviewNode(mrml.scene, p)
    assert p.previewVolume is first and shown[-1] == ((first, node), {"fit": True})
    p.echoTime = 100.0
    assert Preview.updatePreviewNode(mrml.scene, p) is first and shown[-1][1] == {"fit": False}  # updated in place
    np.testing.assert_array_equal(bridge.node_to_volume(first).array,
                                  Preview.previewImage(p)[0].array)


@pytest.fixture(scope="module")
def phantom_levels():
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets

    vol, table = generate_phantom(PhantomConfig(shape=(96, 64, 32), spacing=(2.0, 2.0, 2.0)), seed=2)
    return phantom_targets(vol, table)


def test_measure_segmentation(mrml, phantom_levels, tmp_path):
    from SpineSynthSegLib import slicer_bridge as bridge

    seg = bridge.labels_to_segmentation(mrml.scene, phantom_levels, name="phantom levels")
    doc, lines, table = Measurements.measureSegmentation(mrml.scene, seg)
    assert table.GetNumberOfRows() == len(doc["levels"]) > 4
    assert any(n.GetName() == "L3 anterior height" for n in lines["L3"])
    count = mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode")
    doc, lines, table = Measurements.measureSegmentation(mrml.scene, seg, tableNode=table)  # measuring again
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLMarkupsLineNode") == count  # replaced, not added
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    measured = sum(item["status"] != "not measurable" for item in doc["levels"])
    assert Measurements.measurementSummary(doc).startswith(f"{measured} of {len(doc['levels'])} levels measured.")
    row = next(r for r, item in enumerate(doc["levels"]) if item["level"] == "L3")
    assert Measurements.linesForRow(doc, lines, row) == lines["L3"]
    assert Measurements.linesForRow(doc, lines, len(doc["levels"])) == []
    line = lines["L3"][0]
    a, b = (np.array(line.GetNthControlPointPositionWorld(i)) for i in range(2))
    np.testing.assert_allclose(Measurements.lineCentre(line), (a + b) / 2)
    path = Measurements.exportTable(table, tmp_path / "measurements.csv")
    assert [r["level"] for r in csv.DictReader(path.open())] == [i["level"] for i in doc["levels"]]
    with pytest.raises(ValueError, match="select a segmentation"):
        Measurements.measureSegmentation(mrml.scene, None)
    # a segment that is no level (a canal drawn by hand, label value 1) is listed, not measured as C1
    canal = np.zeros(phantom_levels.shape, np.int32)
    canal[:4, :4, :4] = 1  # a corner the levels leave empty
    canal = phantom_levels.with_array(canal)
    assert not phantom_levels.array[:4, :4, :4].any()
    extra = bridge.labels_to_segmentation(mrml.scene, canal, name="tmp").GetSegmentation().GetNthSegment(0)
    extra.SetName("canal")
    extra.SetTag(bridge.LABEL_TAG, "")
    seg.GetSegmentation().AddSegment(extra, "canal")
    again, _, _ = Measurements.measureSegmentation(mrml.scene, seg, tableNode=table)
    assert [i["level"] for i in again["levels"]] == [i["level"] for i in doc["levels"]] and "C1" not in str(again)
    assert again["skipped_segments"] == ["canal"] and "Not levels, not measured: canal." in Measurements.measurementSummary(again)
    semantic = bridge.labels_to_segmentation(mrml.scene, phantom_levels.with_array((phantom_levels.array > 0).astype(np.int32)),
                                             semantic=True, name="classes")
    with pytest.raises(ValueError, match="classes .* not levels"):
        Measurements.measureSegmentation(mrml.scene, semantic)
    # a label map imported without names is read by label value, and the summary says so
    imported = bridge.labels_to_segmentation(mrml.scene, phantom_levels, name="imported")
    segments = imported.GetSegmentation()
    for i in range(segments.GetNumberOfSegments()):
        segments.GetNthSegment(i).SetName(f"Label_{segments.GetNthSegment(i).GetLabelValue()}")
        segments.GetNthSegment(i).SetTag(bridge.LABEL_TAG, "")
    by_value, _, _ = Measurements.measureSegmentation(mrml.scene, imported)
    assert [i["level"] for i in by_value["levels"]] == [i["level"] for i in doc["levels"]]
    assert "Levels read from the label values (spineps convention)." in Measurements.measurementSummary(by_value)
    assert "label values" not in Measurements.measurementSummary(doc)
    # a hand-drawn segment with Slicer's default name is no level: refused, not measured as C1
    drawn = bridge.labels_to_segmentation(mrml.scene, canal, name="drawn")
    drawn.GetSegmentation().GetNthSegment(0).SetName("Segment_1")
    drawn.GetSegmentation().GetNthSegment(0).SetTag(bridge.LABEL_TAG, "")
    with pytest.raises(ValueError, match="drawn: its segments keep Slicer's default names \\(Segment_1\\)"):
        Measurements.measureSegmentation(mrml.scene, drawn)


def test_segmentation_run_files_and_result(mrml, phantom_levels, tmp_path):
    from SpineSynthSegLib import slicer_bridge as bridge

    with pytest.raises(ValueError, match="select an input volume"):
        SegmentationRun.checkInputs(None, "model.pt")
    with pytest.raises(ValueError, match="checkpoint not found"):
        SegmentationRun.checkInputs(object(), str(tmp_path / "missing.pt"))
    image = phantom_levels.with_array(phantom_levels.array.astype(np.float32))
    inputNode = bridge.volume_to_node(mrml.scene, image, "phantom")
    args = SegmentationRun.prepare(inputNode, tmp_path, "model.pt", "cpu", tta=True)
    assert args[:4] == ["-m", "SpineSynthSegLib.cli", "-v", "segment"] and args[-3:] == ["--model", "model.pt", "--tta"]
    written = read_volume(tmp_path / "input.nrrd")
    np.testing.assert_array_equal(written.array, image.array)
    assert Path(SegmentationRun.libraryDir(), "SpineSynthSegLib").is_dir()
    # what the process writes into <work dir>/output
    out = tmp_path / "output"
    write_volume(Volume(phantom_levels.array, phantom_levels.spacing, phantom_levels.origin,
                        phantom_levels.direction), out / "input_instances.nii.gz")
    (out / "input_levels.json").write_text(json.dumps({"warnings": ["T13 assumed absent"]}))
    node = SegmentationRun.loadResult(mrml.scene, out, inputNode)
    assert node.GetName() == "phantom segmentation"
    assert SegmentationRun.summary(node).endswith("Warnings: T13 assumed absent")
    assert "L3" in SegmentationRun.summary(node)
    np.testing.assert_array_equal(bridge.segmentation_to_volume(node, reference=inputNode).array,
                                  phantom_levels.array)
    with pytest.raises(RuntimeError, match="no result"):
        SegmentationRun.loadResult(mrml.scene, tmp_path / "empty", inputNode)


def test_segmentation_error_line():
    assert SegmentationRun.errorLine("loading\nerror: no vertebra found\nbye\n") == "error: no vertebra found"
    assert SegmentationRun.errorLine("loading\nKilled\n") == "Killed"
    assert SegmentationRun.errorLine("") == "no output"
