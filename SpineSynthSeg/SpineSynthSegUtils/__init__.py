"""Support code of the SpineSynthSeg Slicer module.

`Dependencies` (installer of missing Python packages), one helper module per panel (`Preview`,
`SegmentationProcess` / `SegmentationRun`, `Measurements`) and the self-test's scenarios
(`SelfTestCases`). The library is imported inside the functions, when a feature runs.

No array work here: that is SpineSynthSegLib's job.
"""
