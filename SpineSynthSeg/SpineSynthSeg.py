"""SpineSynthSeg 3D Slicer scripted module (thin GUI over SpineSynthSegLib).

This release registers the module; the interactive panels (synthetic contrast preview,
segmentation runs, measurement overlays) arrive with the Slicer extension issue. All array
work lives in SpineSynthSegLib, which this file must never duplicate.
"""

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModule


class SpineSynthSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineSynthSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSynthSeg developers"]
        self.parent.helpText = (
            "Contrast-agnostic lumbar spine MRI segmentation trained on synthetic images. "
            "The command line `spinesynthseg` offers phantom, synth, make-labelmap and demo today."
        )
        self.parent.acknowledgementText = "Built on MONAI, SimpleITK and PyTorch."
