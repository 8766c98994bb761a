"""SpineSynthSeg library: contrast-agnostic spine MRI segmentation trained on synthetic images.

Importable without 3D Slicer. Stages: io -> labels -> phantom / labelmaps -> synthesis -> (train,
inference, measure, metrics in later releases) -> cli.
"""

__version__ = "0.1.0"
