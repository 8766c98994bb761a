"""SpineSynthSeg: 3D Slicer module, a thin GUI over SpineSynthSegLib.

Three panels, each with its helpers in ``SpineSynthSegUtils``:

1. Synthetic contrast preview (``Preview``): a label map / segmentation (or T1/T2/PD maps) -> a
   synthetic image, updated live from the TR/TE/TI/flip sliders, shown with the label outline.
2. Segmentation (``SegmentationProcess``, ``SegmentationRun``): ``spinesynthseg segment`` in a
   background process with progress, log and Cancel; the result is a segmentation node with one
   named, coloured segment per level and standard terminology.
3. Measurements (``Measurements``): markups lines ('L3 anterior height', one folder per level), a
   table with every value and grade, suspicious levels flagged, CSV export; a row click centres
   the views on the level.

All array work is in SpineSynthSegLib, imported only when a feature runs, after
``SpineSynthSegUtils.Dependencies`` installed what is missing (torch through the PyTorch
extension). The self-test's scenarios are in ``SpineSynthSegUtils.SelfTestCases``.
"""

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from SpineSynthSegUtils import Measurements, Preview, SegmentationRun, SelfTestCases
from SpineSynthSegUtils.Dependencies import DependencyInstaller
from SpineSynthSegUtils.SegmentationProcess import SegmentationProcess

# Mirrors of library constants (the library is imported lazily); Testing/test_slicer_module_static.py
# checks that they match SpineSynthSegLib.synthesis.physics_contrast.SEQUENCES and label_converters.INSTANCE_CONVENTIONS.
SEQUENCES = ("spin_echo", "inversion_recovery", "spoiled_gre", "water_fat")
CONVENTIONS = ("spineps", "verse", "spider", "totalsegmentator", "totalsegmentator_mr")


class SpineSynthSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SpineSynthSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineSynthSeg developers"]
        self.parent.helpText = (
            "Contrast-agnostic spine MRI segmentation trained only on synthetic images (domain randomization and "
            "MR physics). <b>Synthetic contrast preview</b>: see what the training data look like for a label map "
            "and a sequence. <b>Segmentation</b>: vertebral bodies and discs with level labels, in the background. "
            "<b>Measurements</b>: body heights, distances, disc heights, Genant and Meyerding grades as lines and a "
            "table. Python packages (and torch, through the PyTorch extension) are installed on first use after "
            "asking. See the project README for the headless batch mode."
        )
        self.parent.acknowledgementText = (
            "Built on MONAI, PyTorch, SimpleITK and 3D Slicer. Synthesis follows SynthSeg (Billot et al.) and "
            "physics-based MR synthesis; measurements follow the bounding-trapezoid definition of Schneider et al."
        )


@parameterNodeWrapper
class SpineSynthSegParameterNode:
    # 1. synthetic contrast preview
    previewSource: Annotated[str, Choice(["labels", "maps"])] = "labels"
    previewLabels: vtkMRMLSegmentationNode | vtkMRMLLabelMapVolumeNode
    t1Map: vtkMRMLScalarVolumeNode
    t2Map: vtkMRMLScalarVolumeNode
    pdMap: vtkMRMLScalarVolumeNode
    previewMode: Annotated[str, Choice(["physics", "random"])] = "physics"
    sequence: Annotated[str, Choice(list(SEQUENCES))] = "spin_echo"
    fieldStrength: Annotated[float, WithinRange(1.5, 3.0)] = 1.5
    repetitionTime: Annotated[float, WithinRange(5.0, 6000.0)] = 500.0
    echoTime: Annotated[float, WithinRange(1.0, 200.0)] = 15.0
    inversionTime: Annotated[float, WithinRange(10.0, 3000.0)] = 150.0
    flipAngle: Annotated[float, WithinRange(1.0, 180.0)] = 90.0
    seed: Annotated[int, WithinRange(0, 999999)] = 0
    fullChain: bool = False
    livePreview: bool = True
    previewVolume: vtkMRMLScalarVolumeNode
    # 2. segmentation
    inputVolume: vtkMRMLScalarVolumeNode
    useDefaultModel: bool = True
    modelPath: Path = Path()
    device: Annotated[str, Choice(["auto", "cpu", "cuda"])] = "auto"
    testTimeAugmentation: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    # 3. measurements
    measureSegmentation: vtkMRMLSegmentationNode
    convention: Annotated[str, Choice(list(CONVENTIONS))] = "spineps"
    measurementsTable: vtkMRMLTableNode


class SpineSynthSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._previewKey = None
        self._previewTimer = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineSynthSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineSynthSegLogic()

        self._previewTimer = qt.QTimer()
        self._previewTimer.setSingleShot(True)
        self._previewTimer.setInterval(250)
        self._previewTimer.timeout.connect(self.onLivePreview)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantom)
        self.ui.newSampleButton.connect("clicked(bool)", self.onNewSample)
        self.ui.previewButton.connect("clicked(bool)", self.onUpdatePreview)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasure)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.measurementsTableView.connect("clicked(QModelIndex)", self.onTableClicked)
        self.initializeParameterNode()

    def cleanup(self):
        self.logic.cancelSegmentation()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        maps = p.previewSource == "maps"
        for name in ("t1MapSelector", "t2MapSelector", "pdMapSelector"):
            getattr(self.ui, name).enabled = maps
        self.ui.previewLabelsSelector.enabled = not maps
        physics = p.previewMode == "physics" or maps
        self.ui.sequenceComboBox.enabled = physics
        for name in ("fieldStrengthSlider", "repetitionTimeSlider", "echoTimeSlider"):
            getattr(self.ui, name).enabled = physics
        self.ui.inversionTimeSlider.enabled = physics and p.sequence == "inversion_recovery"
        self.ui.flipAngleSlider.enabled = physics and p.sequence in ("spoiled_gre", "water_fat")
        ready = bool(p.t1Map and p.t2Map and p.pdMap) if maps else bool(p.previewLabels)
        self.ui.previewButton.enabled = ready
        self.ui.modelPathLineEdit.enabled = not p.useDefaultModel
        running = self.logic.isSegmenting()
        self.ui.segmentButton.enabled = bool(p.inputVolume) and not running
        self.ui.cancelButton.enabled = running
        self.ui.measureButton.enabled = bool(p.measureSegmentation)
        self.ui.exportCsvButton.enabled = bool(p.measurementsTable)
        table = p.measurementsTable
        if table is not None and self.ui.measurementsTableView.mrmlTableNode() is not table:
            self.ui.measurementsTableView.setMRMLTableNode(table)
        key = Preview.inputsKey(p)
        if key != self._previewKey:
            self._previewKey = key
            if p.livePreview and ready and self.logic.dependenciesReady():
                self._previewTimer.start()

    # ------------------------------------------------------------------ 1. preview

    def onLoadPhantom(self):
        with slicer.util.tryWithErrorDisplay("Could not create the phantom.", waitCursor=True):
            self.logic.ensureDependencies()
            self._parameterNode.previewSource = "labels"
            self._parameterNode.previewLabels = self.logic.loadPhantomSample(self._parameterNode.seed)

    def onNewSample(self):
        self._parameterNode.seed = (self._parameterNode.seed + 1) % 1_000_000
        if not self._parameterNode.livePreview:
            self.onUpdatePreview()

    def onUpdatePreview(self):
        with slicer.util.tryWithErrorDisplay("Preview failed.", waitCursor=True):
            self.logic.ensureDependencies()
            self._runPreview()

    def onLivePreview(self):
        try:
            self._runPreview()
        except Exception as err:  # live updates report in the panel instead of a dialog per slider move
            logging.getLogger(__name__).exception("SpineSynthSeg preview failed")
            self.ui.previewStatusLabel.text = f"Preview failed: {err}"

    def _runPreview(self):
        node = self.logic.updatePreview(self._parameterNode)
        self.ui.previewStatusLabel.text = f"{node.GetName()}: {self.logic.previewDescription(self._parameterNode)}"

    # ------------------------------------------------------------------ 2. segmentation

    def onSegment(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Segmentation could not start.", waitCursor=True):
            self.logic.ensureDependencies()
            model = None if p.useDefaultModel else str(p.modelPath)
            self.ui.segmentationLogTextEdit.clear()
            self.logic.startSegmentation(p.inputVolume, model, p.device, p.testTimeAugmentation,
                                         onOutput=self._onSegmentationOutput, onFinished=self._onSegmentationFinished)
            self.ui.segmentationProgressBar.setRange(0, 0)  # busy: the process reports stages, not percentages
            self.ui.segmentationStatusLabel.text = "Segmenting in the background..."
        self._onParameterNodeModified()

    def onCancel(self):
        self.logic.cancelSegmentation()

    def _onSegmentationOutput(self, text):
        self.ui.segmentationLogTextEdit.appendPlainText(text.rstrip())
        last = [line for line in text.splitlines() if line.strip()]
        if last:
            self.ui.segmentationStatusLabel.text = last[-1][:200]

    def _onSegmentationFinished(self, exitCode):
        p = self._parameterNode
        self.ui.segmentationProgressBar.setRange(0, 100)
        self.ui.segmentationProgressBar.value = 100 if exitCode == 0 else 0
        if exitCode == 0:
            with slicer.util.tryWithErrorDisplay("Could not load the segmentation.", waitCursor=True):
                node = self.logic.loadSegmentationResult(p.inputVolume, p.outputSegmentation)
                p.outputSegmentation = node
                p.measureSegmentation = node
                self.ui.segmentationStatusLabel.text = self.logic.segmentationSummary(node)
        elif exitCode == -1:
            self.ui.segmentationStatusLabel.text = "Cancelled."
        else:
            message = self.logic.segmentationError()
            self.ui.segmentationStatusLabel.text = f"Failed: {message}"
            if not slicer.app.testingEnabled():
                slicer.util.errorDisplay(f"Segmentation failed:\n\n{message}", detailedText=self.logic.segmentationLog())
        self.logic.discardSegmentationFiles()
        self._onParameterNodeModified()

    # ------------------------------------------------------------------ 3. measurements

    def onMeasure(self):
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Measurement failed.", waitCursor=True):
            self.logic.ensureDependencies(withTorch=False)
            table = self.logic.measure(p.measureSegmentation, p.convention, p.measurementsTable)
            p.measurementsTable = table
            self.ui.measurementsTableView.setMRMLTableNode(table)
            self.ui.measurementsStatusLabel.text = self.logic.measurementSummary()

    def onExportCsv(self):
        table = self._parameterNode.measurementsTable
        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Export measurements", f"{table.GetName()}.csv",
                                              "CSV files (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Export failed."):
                self.logic.exportTable(table, path)

    def onTableClicked(self, index):
        self.logic.jumpToRow(Measurements.tableRow(self.ui.measurementsTableView, index))


class SpineSynthSegLogic(ScriptedLoadableModuleLogic):
    """Composition of library calls for the three panels (collaborators injectable for tests).

    Args:
        dependencies: checks/installs Python packages (default: `DependencyInstaller`).
        processFactory: ``processFactory(onOutput=..., onFinished=...)`` -> an object with
            ``start(args, libraryDir)``, ``cancel()``, ``isRunning()``, ``waitForFinished(ms)``,
            ``output`` (default: `SegmentationProcess`, a qt.QProcess).
    """

    def __init__(self, dependencies=None, processFactory=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.dependencies = dependencies or DependencyInstaller()
        self.processFactory = processFactory or SegmentationProcess
        self.process = None
        self._workDir = None
        self._ready = False
        self._labelCache = {}
        self.measurementDocument = None
        self.linesByLevel = {}

    def getParameterNode(self):
        return SpineSynthSegParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ dependencies

    def dependenciesReady(self) -> bool:
        if not self._ready:
            self._ready = not self.dependencies.missing()
        return self._ready

    def ensureDependencies(self, withTorch: bool = True) -> None:
        """Install missing packages after asking; raises DependencyError when declined."""
        if not self.dependenciesReady():
            self.dependencies.ensure(withTorch=withTorch)
            self._ready = not self.dependencies.missing()

    # ------------------------------------------------------------------ 1. preview

    def loadPhantomSample(self, seed: int = 0, config=None, name: str = "SpineSynthSeg phantom"):
        """A label map node with the procedural phantom; its label table is stored on the node."""
        return Preview.phantomNode(slicer.mrmlScene, seed, config, name)

    def _labels(self, node):
        """(Volume, LabelTable) of a label map or segmentation node, cached until the node changes."""
        key = (node.GetID(), node.GetMTime())
        if key not in self._labelCache:
            self._labelCache = {key: Preview.labelsFromNode(node)}
        return self._labelCache[key]

    previewSettings = staticmethod(Preview.previewSettings)
    previewDescription = staticmethod(Preview.previewDescription)
    showPreview = staticmethod(Preview.showPreview)

    def updatePreview(self, p):
        """Compute the synthetic image for the parameter node's settings into ``p.previewVolume``."""
        return Preview.updatePreviewNode(slicer.mrmlScene, p, self._labels)

    # ------------------------------------------------------------------ 2. segmentation

    def isSegmenting(self) -> bool:
        return self.process is not None and self.process.isRunning()

    def startSegmentation(self, inputNode, modelPath=None, device="auto", tta=False, onOutput=None, onFinished=None):
        """Write the input to a temporary folder and start ``spinesynthseg segment`` on it."""
        if self.isSegmenting():
            raise RuntimeError("a segmentation is already running")
        SegmentationRun.checkInputs(inputNode, modelPath)
        self.discardSegmentationFiles()
        self._workDir = Path(tempfile.mkdtemp(prefix="SpineSynthSeg-"))
        args = SegmentationRun.prepare(inputNode, self._workDir, modelPath, device, tta)
        self.process = self.processFactory(onOutput=onOutput, onFinished=onFinished)
        self.process.start(args, libraryDir=SegmentationRun.libraryDir())
        return self.process

    def cancelSegmentation(self):
        if self.isSegmenting():
            self.process.cancel()

    def segmentationLog(self) -> str:
        return "".join(self.process.output) if self.process is not None else ""

    def segmentationError(self) -> str:
        return SegmentationRun.errorLine(self.segmentationLog())

    def loadSegmentationResult(self, inputNode, outputNode=None):
        """The finished run's instance (or semantic) label map as a segmentation node on the input's grid."""
        return SegmentationRun.loadResult(slicer.mrmlScene, self._workDir / "output", inputNode, outputNode)

    segmentationSummary = staticmethod(SegmentationRun.summary)

    def discardSegmentationFiles(self):
        if self._workDir is not None and not self.isSegmenting():
            shutil.rmtree(self._workDir, ignore_errors=True)
            self._workDir = None

    # ------------------------------------------------------------------ 3. measurements

    def measure(self, segmentationNode, convention="spineps", tableNode=None, folder=None):
        """Measure a segmentation: lines (one folder per level) and a table node; returns the table."""
        doc, self.linesByLevel, table = Measurements.measureSegmentation(
            slicer.mrmlScene, segmentationNode, convention, tableNode, folder)
        self.measurementDocument = doc
        return table

    def measurementSummary(self) -> str:
        return Measurements.measurementSummary(self.measurementDocument)

    def linesForRow(self, row: int) -> list:
        return Measurements.linesForRow(self.measurementDocument, self.linesByLevel, row)

    def jumpToRow(self, row: int) -> bool:
        """Centre the slice views on the middle of the row's first line; False without a line."""
        lines = self.linesForRow(row)
        if not lines:
            return False
        slicer.modules.markups.logic().JumpSlicesToLocation(*Measurements.lineCentre(lines[0]), True)
        return True

    exportTable = staticmethod(Measurements.exportTable)


class SpineSynthSegTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: phantom sample data, preview, segmentation of a small volume, measurements."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        self.logic = SpineSynthSegLogic()

    def runTest(self):
        self.setUp()
        if self.logic.dependencies.missing():
            if slicer.app.testingEnabled():
                self.skipTest("missing Python packages: " + ", ".join(self.logic.dependencies.missing()))
            self.logic.ensureDependencies()
        for test in (self.test_preview, self.test_segmentation, self.test_measurements):
            self.setUp()
            test()

    def test_preview(self):
        SelfTestCases.checkPreview(self, self.logic)

    def test_segmentation(self):
        SelfTestCases.checkSegmentation(self, self.logic)

    def test_measurements(self):
        SelfTestCases.checkMeasurements(self, self.logic)
