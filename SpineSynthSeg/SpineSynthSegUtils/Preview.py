"""Synthetic-contrast preview panel: parameter node -> library settings, input labels, display.

The image itself is computed by ``SpineSynthSegLib.contrast_preview`` (imported when a function
runs: the library's dependencies are installed on demand). Functions that touch the scene take it
as an argument, so they also run outside Slicer with ``slicer-core``.
"""

from __future__ import annotations

INPUT_PARAMETERS = ("previewSource", "previewLabels", "t1Map", "t2Map", "pdMap", "previewMode", "sequence",
                    "fieldStrength", "repetitionTime", "echoTime", "inversionTime", "flipAngle", "seed", "fullChain")
"""Parameters of the module's parameter node that the preview image depends on."""


def inputsKey(p) -> tuple:
    """A cheap comparable key of the preview's inputs: changes when the live preview must be recomputed.

    Nodes are represented by their ID (str() of a VTK object prints all of it).
    """
    return tuple(_identity(getattr(p, name)) for name in INPUT_PARAMETERS)


def _identity(value):
    return value.GetID() if hasattr(value, "GetID") else value


def previewSettings(p):
    """The library's `PreviewSettings` from the module's parameter node."""
    from SpineSynthSegLib.contrast_preview import PreviewSettings

    return PreviewSettings(
        mode=p.previewMode, sequence=p.sequence, field_strength=p.fieldStrength, tr=p.repetitionTime,
        te=p.echoTime, ti=p.inversionTime, flip_deg=p.flipAngle, seed=p.seed, full_chain=p.fullChain)


def previewDescription(p) -> str:
    """One line for the panel: 'spin_echo 1.5 T, TR 500 ms, TE 15.0 ms' or 'domain randomization, seed 3'."""
    if p.previewMode == "random" and p.previewSource == "labels":
        return f"domain randomization, seed {p.seed}" + (", full chain" if p.fullChain else "")
    return (f"{p.sequence} {p.fieldStrength:.1f} T, TR {p.repetitionTime:.0f} ms, TE {p.echoTime:.1f} ms"
            + (f", TI {p.inversionTime:.0f} ms" if p.sequence == "inversion_recovery" else "")
            + (f", flip {p.flipAngle:.0f} deg" if p.sequence in ("spoiled_gre", "water_fat") else "")
            + (", full chain" if p.fullChain and p.previewSource == "labels" else ""))


def phantomNode(scene, seed: int = 0, config=None, name: str = "SpineSynthSeg phantom"):
    """A label map node with the procedural phantom; its label table is stored on the node."""
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom

    vol, table = generate_phantom(config or PhantomConfig(), seed=int(seed))
    node = bridge.volume_to_node(scene, vol, name, labelmap=True)
    node.SetAttribute(bridge.TABLE_ATTRIBUTE, table.to_json())
    return node


def labelsFromNode(node):
    """(Volume, LabelTable) of a label map or segmentation node (the table stored on the node, else a default)."""
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.contrast_preview import default_label_table
    from SpineSynthSegLib.labels import LabelTable

    if node.IsA("vtkMRMLSegmentationNode"):
        vol = bridge.segmentation_to_volume(node)
    else:
        vol = bridge.node_to_volume(node)
    text = node.GetAttribute(bridge.TABLE_ATTRIBUTE)
    table = LabelTable.from_json(text, node.GetName()) if text else default_label_table(vol.array)
    return vol, table


def previewImage(p, labelsOf=labelsFromNode):
    """The synthetic image (a library Volume) for the parameter node's settings.

    Args:
        p: the module's parameter node.
        labelsOf: ``labelsOf(node) -> (Volume, LabelTable)`` (the logic passes a cached version).

    Returns:
        (image, labels node or None for quantitative maps).
    """
    from SpineSynthSegLib import slicer_bridge as bridge
    from SpineSynthSegLib.contrast_preview import contrast_preview, qmri_preview

    settings = previewSettings(p)
    if p.previewSource == "maps":
        if not (p.t1Map and p.t2Map and p.pdMap):
            raise ValueError("select the T1, T2 and PD map volumes")
        return qmri_preview(*(bridge.node_to_volume(n) for n in (p.t1Map, p.t2Map, p.pdMap)), settings), None
    if not p.previewLabels:
        raise ValueError("select a label map or segmentation (or load the phantom)")
    vol, table = labelsOf(p.previewLabels)
    return contrast_preview(vol, table, settings), p.previewLabels


def updatePreviewNode(scene, p, labelsOf=labelsFromNode):
    """Compute the preview into ``p.previewVolume`` (created on first use) and show it; returns the node."""
    from SpineSynthSegLib import slicer_bridge as bridge

    image, labels = previewImage(p, labelsOf)
    created = p.previewVolume is None
    node = bridge.volume_to_node(scene, image, "SpineSynthSeg preview", node=p.previewVolume)
    if created:
        p.previewVolume = node
    showPreview(node, labels, fit=created)
    return node


def showPreview(imageNode, labelsNode=None, fit=False):
    """Image as background in the slice views, the labels as an outline on top."""
    import slicer

    if labelsNode is not None and labelsNode.IsA("vtkMRMLLabelMapVolumeNode"):
        slicer.util.setSliceViewerLayers(background=imageNode, foreground=None, label=labelsNode, fit=fit)
        for sliceNode in slicer.util.getNodesByClass("vtkMRMLSliceNode"):
            sliceNode.SetUseLabelOutline(True)
    else:
        slicer.util.setSliceViewerLayers(background=imageNode, foreground=None, label=None, fit=fit)
        if labelsNode is not None and labelsNode.GetDisplayNode():
            display = labelsNode.GetDisplayNode()
            display.SetVisibility(True)
            display.SetVisibility2DFill(False)
            display.SetVisibility2DOutline(True)
