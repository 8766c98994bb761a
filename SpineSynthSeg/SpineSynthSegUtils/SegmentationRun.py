"""Segmentation panel: the background run's input files, the result as a segmentation node, messages.

`prepare` writes the input volume into a work folder and returns the ``spinesynthseg segment``
arguments that `SegmentationProcess` runs on it (output in ``<work dir>/output``); `loadResult`
reads what the run wrote there. The library is imported when a function runs; the scene is an
argument, so this also runs outside Slicer with ``slicer-core``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .SegmentationProcess import segmentCommand

LEVELS_ATTRIBUTE = "SpineSynthSeg.Levels"  #: segmentation node attribute: the level assignment report JSON


def checkInputs(inputNode, modelPath=None) -> None:
    """Raise ValueError (no input, missing checkpoint) or the library's error when no model is shipped."""
    from SpineSynthSegLib.inference import default_model_path

    if inputNode is None:
        raise ValueError("select an input volume")
    if modelPath:
        if not Path(modelPath).is_file():
            raise ValueError(f"checkpoint not found: {modelPath}")
    else:
        default_model_path()  # the library's clear error when no model is shipped yet


def prepare(inputNode, workDir, modelPath=None, device="auto", tta=False) -> list[str]:
    """Write the input volume to ``<workDir>/input.nrrd``; the segment command's arguments (after the program)."""
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.io import write_volume

    inputPath = write_volume(bridge.node_to_volume(inputNode), Path(workDir) / "input.nrrd")
    return segmentCommand(str(inputPath), str(Path(workDir) / "output"), modelPath, device, tta)


def libraryDir() -> str:
    """The folder holding SpineSynthSegLib (the process's PYTHONPATH)."""
    import SpineSynthSegLib

    return str(Path(SpineSynthSegLib.__file__).resolve().parents[1])


def loadResult(scene, outputDir, inputNode, outputNode=None):
    """The instance (else semantic) label map as a segmentation node on the input's grid.

    The level assignment report (``input_levels.json``), when written, is kept in the node's
    `LEVELS_ATTRIBUTE` attribute.
    """
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.io import read_labels

    out = Path(outputDir)
    instances, semantic = out / "input_instances.nii.gz", out / "input_semantic.nii.gz"
    path = instances if instances.exists() else semantic
    if not path.exists():
        raise RuntimeError(f"the segmentation process wrote no result in {out}")
    name = f"{inputNode.GetName()} segmentation"
    node = bridge.labels_to_segmentation(scene, read_labels(path), semantic=path == semantic,
                                         name=name, reference=inputNode, node=outputNode)
    levels = out / "input_levels.json"
    if levels.exists():
        node.SetAttribute(LEVELS_ATTRIBUTE, levels.read_text())
    return node


def summary(node) -> str:
    """'5 segments: L1, L1-L2, ...' plus the level assignment's warnings."""
    seg = node.GetSegmentation()
    names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
    text = f"{len(names)} segments: {', '.join(names)}" if names else "No structure found."
    report = json.loads(node.GetAttribute(LEVELS_ATTRIBUTE) or "{}")
    warnings = report.get("warnings") if isinstance(report, dict) else None
    return text + (f" Warnings: {'; '.join(map(str, warnings))}" if warnings else "")


def errorLine(log: str) -> str:
    """The line of a failed run's output to show: its last error line, else its last line."""
    lines = [line for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "ERROR"))]
    return (errors or lines or ["no output"])[-1]
