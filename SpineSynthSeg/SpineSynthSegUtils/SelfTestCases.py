"""Scenarios of the module's self-test (``SpineSynthSegTest``, run inside Slicer by *Reload and Test*).

Each ``check*`` function takes the running test case (a ``unittest.TestCase`` with
``delayDisplay``) and a fresh ``SpineSynthSegLogic`` on a cleared scene, and exercises one panel
end to end on a small procedural phantom.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def smallPhantom():
    """A phantom configuration small enough for a quick self-test."""
    from SpineSynthSegLib.phantom import PhantomConfig

    return PhantomConfig(shape=(96, 72, 32), spacing=(2.0, 2.0, 2.0))


def checkPreview(test, logic):
    """Physics preview on the phantom's grid, changed by TR/TE; the random full chain runs."""
    from SpineSynthSegLib import slicer_bridge as bridge

    test.delayDisplay("Preview from the phantom")
    p = logic.getParameterNode()
    p.previewLabels = logic.loadPhantomSample(0, smallPhantom())
    first = bridge.node_to_volume(logic.updatePreview(p))
    labels = bridge.node_to_volume(p.previewLabels)
    test.assertEqual(first.shape, labels.shape)
    test.assertFalse(first.geometry_mismatch(labels))
    p.echoTime = 100.0
    p.repetitionTime = 4000.0
    second = bridge.node_to_volume(logic.updatePreview(p))
    test.assertFalse((first.array == second.array).all())
    p.previewMode, p.fullChain = "random", True
    logic.updatePreview(p)
    test.delayDisplay("Preview OK")


def checkSegmentation(test, logic):
    """A synthetic T2w phantom segmented in the background process (a tiny network without a shipped model)."""
    import slicer

    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.contrast_preview import PreviewSettings, contrast_preview
    from SpineSynthSegLib.inference import DEFAULT_MODEL
    from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network, save_checkpoint
    from SpineSynthSegLib.phantom import generate_phantom

    test.delayDisplay("Segmentation of a small synthetic volume in a background process")
    labels, table = generate_phantom(smallPhantom(), seed=1)
    image = contrast_preview(labels, table, PreviewSettings(tr=4000, te=90))
    inputNode = bridge.volume_to_node(slicer.mrmlScene, image, "phantom T2w")
    model = None
    if not DEFAULT_MODEL.is_file():  # no shipped model yet: a tiny untrained network exercises the path
        meta = ModelMeta(model=ModelConfig(features=(4, 4, 8, 8, 8, 4)), spacing=(3.0, 3.0, 3.0),
                         patch_size=(32, 32, 32))
        model = str(Path(tempfile.mkdtemp(prefix="SpineSynthSegTest-")) / "tiny.pt")
        save_checkpoint(model, build_network(meta.model), meta)
    codes = []
    process = logic.startSegmentation(inputNode, model, "cpu", onFinished=codes.append)
    process.waitForFinished(10 * 60 * 1000)
    test.assertEqual(codes, [0], logic.segmentationLog())
    node = logic.loadSegmentationResult(inputNode)
    seg = node.GetSegmentation()
    geometry = seg.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
    test.assertTrue(geometry)  # references the input's grid
    if seg.GetNumberOfSegments():  # an untrained network may find nothing
        test.assertEqual(bridge.segmentation_to_volume(node, reference=inputNode).shape, image.shape)
    logic.discardSegmentationFiles()
    test.delayDisplay("Segmentation OK")


def checkMeasurements(test, logic):
    """The phantom's levels measured: table rows, named lines, jump to a row, CSV export."""
    import slicer

    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.phantom import generate_phantom, phantom_targets

    test.delayDisplay("Measurements of the phantom's levels")
    labels, table = generate_phantom(smallPhantom(), seed=2)
    seg = bridge.labels_to_segmentation(slicer.mrmlScene, phantom_targets(labels, table), name="phantom levels")
    tableNode = logic.measure(seg)
    test.assertGreater(tableNode.GetNumberOfRows(), 4)
    test.assertTrue(any(n.GetName() == "L3 anterior height" for n in logic.linesByLevel["L3"]))
    test.assertTrue(logic.jumpToRow(0))
    path = Path(tempfile.mkdtemp(prefix="SpineSynthSegTest-")) / "measurements.csv"
    logic.exportTable(tableNode, path)
    test.assertTrue(path.is_file())
    test.delayDisplay("Measurements OK")
