"""Support code of the SpineSynthSeg Slicer module: dependency installer and background process.

No array work here: that is SpineSynthSegLib's job.
"""
