"""SpineSynthSeg: 3D Slicer module, a thin GUI over SpineSynthSegLib.

Three panels:

1. Synthetic contrast preview: a label map / segmentation (or T1/T2/PD maps) -> a synthetic image
   from the library's synthesis pipeline or signal equations, updated live from the TR/TE/TI/flip
   sliders, shown in the slice views with the label outline.
2. Segmentation: ``spinesynthseg segment`` in a background process (Slicer stays responsive),
   with progress, log and Cancel; the result becomes a segmentation node with one named,
   coloured segment per level and standard terminology.
3. Measurements: markups lines per measurement ('L3 anterior height', one folder per level), a
   table with every value and grade, suspicious levels flagged, a row click centres the views on
   the level, CSV export.

All array work is in SpineSynthSegLib (its MRML adapters are ``SpineSynthSegLib.slicer_bridge`` and
``slicer_measurements``, the preview is ``contrast_preview``);
the library and its Python dependencies are imported only when a feature runs, after
``SpineSynthSegUtils.Dependencies`` installed what is missing (torch through the PyTorch
extension).
"""

import json
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
from SpineSynthSegUtils.Dependencies import DependencyInstaller
from SpineSynthSegUtils.SegmentationProcess import SegmentationProcess, segmentCommand

# Mirrors of library constants (the library is imported lazily); Testing/test_slicer_module_static.py
# checks that they match SpineSynthSegLib.synthesis.tissues.SEQUENCES and measure_report.CONVENTIONS.
SEQUENCES = ("spin_echo", "inversion_recovery", "spoiled_gre", "water_fat")
CONVENTIONS = ("spineps", "verse", "spider", "totalsegmentator", "totalsegmentator_mr")
_PREVIEW_KEYS = ("previewSource", "previewLabels", "t1Map", "t2Map", "pdMap", "previewMode", "sequence",
                 "fieldStrength", "repetitionTime", "echoTime", "inversionTime", "flipAngle", "seed", "fullChain")


def _identity(value):
    """A cheap comparable value: node ID for nodes (str() of a VTK object prints all of it)."""
    return value.GetID() if hasattr(value, "GetID") else value


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
        key = tuple(_identity(getattr(p, k)) for k in _PREVIEW_KEYS)
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
        view = self.ui.measurementsTableView
        try:  # the view shows a sort proxy of the table model
            row = view.tableModel().mrmlTableRowIndex(view.sortFilterProxyModel().mapToSource(index))
        except (AttributeError, TypeError, ValueError):
            row = index.row()
        self.logic.jumpToRow(int(row))


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
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom

        vol, table = generate_phantom(config or PhantomConfig(), seed=int(seed))
        node = bridge.volume_to_node(slicer.mrmlScene, vol, name, labelmap=True)
        node.SetAttribute(bridge.TABLE_ATTRIBUTE, table.to_json())
        return node

    def _labels(self, node):
        """(Volume, LabelTable) of a label map or segmentation node, cached until the node changes."""
        from SpineSynthSegLib import contrast_preview as preview
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.labels import LabelTable

        key = (node.GetID(), node.GetMTime())
        if key not in self._labelCache:
            if node.IsA("vtkMRMLSegmentationNode"):
                vol = bridge.segmentation_to_volume(node)
            else:
                vol = bridge.node_to_volume(node)
            text = node.GetAttribute(bridge.TABLE_ATTRIBUTE)
            table = LabelTable.from_json(text, node.GetName()) if text else preview.default_label_table(vol.array)
            self._labelCache = {key: (vol, table)}
        return self._labelCache[key]

    @staticmethod
    def previewSettings(p):
        from SpineSynthSegLib import contrast_preview as preview

        return preview.PreviewSettings(
            mode=p.previewMode, sequence=p.sequence, field_strength=p.fieldStrength, tr=p.repetitionTime,
            te=p.echoTime, ti=p.inversionTime, flip_deg=p.flipAngle, seed=p.seed, full_chain=p.fullChain)

    @staticmethod
    def previewDescription(p) -> str:
        if p.previewMode == "random" and p.previewSource == "labels":
            return f"domain randomization, seed {p.seed}" + (", full chain" if p.fullChain else "")
        return (f"{p.sequence} {p.fieldStrength:.1f} T, TR {p.repetitionTime:.0f} ms, TE {p.echoTime:.1f} ms"
                + (f", TI {p.inversionTime:.0f} ms" if p.sequence == "inversion_recovery" else "")
                + (f", flip {p.flipAngle:.0f} deg" if p.sequence in ("spoiled_gre", "water_fat") else "")
                + (", full chain" if p.fullChain and p.previewSource == "labels" else ""))

    def updatePreview(self, p):
        """Compute the synthetic image for the parameter node's settings into ``p.previewVolume``."""
        from SpineSynthSegLib import contrast_preview as preview
        from SpineSynthSegLib import slicer_bridge as bridge

        settings = self.previewSettings(p)
        if p.previewSource == "maps":
            if not (p.t1Map and p.t2Map and p.pdMap):
                raise ValueError("select the T1, T2 and PD map volumes")
            image = preview.qmri_preview(*(bridge.node_to_volume(n) for n in (p.t1Map, p.t2Map, p.pdMap)), settings)
            labels = None
        else:
            if not p.previewLabels:
                raise ValueError("select a label map or segmentation (or load the phantom)")
            vol, table = self._labels(p.previewLabels)
            image = preview.contrast_preview(vol, table, settings)
            labels = p.previewLabels
        created = p.previewVolume is None
        node = bridge.volume_to_node(slicer.mrmlScene, image, "SpineSynthSeg preview", node=p.previewVolume)
        if created:
            p.previewVolume = node
        self.showPreview(node, labels, fit=created)
        return node

    @staticmethod
    def showPreview(imageNode, labelsNode=None, fit=False):
        """Image as background, the labels as an outline on top."""
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

    # ------------------------------------------------------------------ 2. segmentation

    def isSegmenting(self) -> bool:
        return self.process is not None and self.process.isRunning()

    def startSegmentation(self, inputNode, modelPath=None, device="auto", tta=False, onOutput=None, onFinished=None):
        """Write the input to a temporary folder and start ``spinesynthseg segment`` on it."""
        import SpineSynthSegLib
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.inference import default_model_path
        from SpineSynthSegLib.io import write_volume

        if self.isSegmenting():
            raise RuntimeError("a segmentation is already running")
        if inputNode is None:
            raise ValueError("select an input volume")
        if modelPath:
            if not Path(modelPath).is_file():
                raise ValueError(f"checkpoint not found: {modelPath}")
        else:
            default_model_path()  # the library's clear error when no model is shipped yet
        self.discardSegmentationFiles()
        self._workDir = Path(tempfile.mkdtemp(prefix="SpineSynthSeg-"))
        inputPath = write_volume(bridge.node_to_volume(inputNode), self._workDir / "input.nrrd")
        args = segmentCommand(str(inputPath), str(self._workDir / "output"), modelPath, device, tta)
        self.process = self.processFactory(onOutput=onOutput, onFinished=onFinished)
        self.process.start(args, libraryDir=str(Path(SpineSynthSegLib.__file__).resolve().parents[1]))
        return self.process

    def cancelSegmentation(self):
        if self.isSegmenting():
            self.process.cancel()

    def segmentationLog(self) -> str:
        return "".join(self.process.output) if self.process is not None else ""

    def segmentationError(self) -> str:
        lines = [line for line in self.segmentationLog().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith(("error:", "ERROR"))]
        return (errors or lines or ["no output"])[-1]

    def loadSegmentationResult(self, inputNode, outputNode=None):
        """The finished run's instance (or semantic) label map as a segmentation node on the input's grid."""
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.io import read_labels

        out = self._workDir / "output"
        instances, semantic = out / "input_instances.nii.gz", out / "input_semantic.nii.gz"
        path = instances if instances.exists() else semantic
        if not path.exists():
            raise RuntimeError(f"the segmentation process wrote no result in {out}")
        name = f"{inputNode.GetName()} segmentation"
        node = bridge.labels_to_segmentation(slicer.mrmlScene, read_labels(path), semantic=path == semantic,
                                             name=name, reference=inputNode, node=outputNode)
        levels = out / "input_levels.json"
        if levels.exists():
            node.SetAttribute("SpineSynthSeg.Levels", levels.read_text())
        return node

    @staticmethod
    def segmentationSummary(node) -> str:
        seg = node.GetSegmentation()
        names = [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]
        text = f"{len(names)} segments: {', '.join(names)}" if names else "No structure found."
        report = json.loads(node.GetAttribute("SpineSynthSeg.Levels") or "{}")
        warnings = report.get("warnings") if isinstance(report, dict) else None
        return text + (f" Warnings: {'; '.join(map(str, warnings))}" if warnings else "")

    def discardSegmentationFiles(self):
        if self._workDir is not None and not self.isSegmenting():
            shutil.rmtree(self._workDir, ignore_errors=True)
            self._workDir = None

    # ------------------------------------------------------------------ 3. measurements

    def measure(self, segmentationNode, convention="spineps", tableNode=None, folder=None):
        """Measure a segmentation: lines (one folder per level) and a table node; returns the table."""
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib import slicer_measurements as measurements
        from SpineSynthSegLib.measure import measure_volume
        from SpineSynthSegLib.measure_report import convert, to_json

        if segmentationNode is None:
            raise ValueError("select a segmentation")
        name = segmentationNode.GetName()
        vol = bridge.segmentation_to_volume(segmentationNode, values="auto" if convention == "spineps" else "label_value")
        vol = vol.with_array(convert(vol.array, convention, name))
        meta = {"segmentation": name, "convention": convention, "spacing_mm": list(vol.spacing)}
        doc = json.loads(json.dumps(to_json(measure_volume(vol, name), meta)))
        folder = folder or f"{name} measurements"
        measurements.remove_folder(slicer.mrmlScene, folder)  # measuring again replaces the lines
        self.linesByLevel = measurements.measurement_lines(slicer.mrmlScene, doc, folder)
        self.measurementDocument = doc
        return measurements.measurements_table(slicer.mrmlScene, doc, f"{name} measurements", node=tableNode)

    def measurementSummary(self) -> str:
        from SpineSynthSegLib import slicer_measurements as measurements

        doc = self.measurementDocument or {"levels": []}
        measured = sum(item["status"] != "not measurable" for item in doc["levels"])
        flagged = measurements.suspicious_levels(doc)
        text = f"{measured} of {len(doc['levels'])} levels measured."
        return text + (" Suspicious: " + "; ".join(f"{k} {v}" for k, v in flagged.items()) if flagged else "")

    def linesForRow(self, row: int) -> list:
        levels = (self.measurementDocument or {}).get("levels", [])
        return self.linesByLevel.get(levels[row]["level"], []) if 0 <= row < len(levels) else []

    def jumpToRow(self, row: int) -> bool:
        """Centre the slice views on the middle of the row's first line; False without a line."""
        lines = self.linesForRow(row)
        if not lines:
            return False
        a, b = (lines[0].GetNthControlPointPositionWorld(i) for i in range(2))
        centre = [(x + y) / 2 for x, y in zip(a, b)]
        slicer.modules.markups.logic().JumpSlicesToLocation(*centre, True)
        return True

    @staticmethod
    def exportTable(tableNode, path):
        from SpineSynthSegLib import slicer_bridge as bridge

        return bridge.save_node(tableNode, path)


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

    def _smallPhantom(self):
        from SpineSynthSegLib.phantom import PhantomConfig

        return PhantomConfig(shape=(96, 72, 32), spacing=(2.0, 2.0, 2.0))

    def test_preview(self):
        from SpineSynthSegLib import slicer_bridge as bridge

        self.delayDisplay("Preview from the phantom")
        p = self.logic.getParameterNode()
        p.previewLabels = self.logic.loadPhantomSample(0, self._smallPhantom())
        first = bridge.node_to_volume(self.logic.updatePreview(p))
        labels = bridge.node_to_volume(p.previewLabels)
        self.assertEqual(first.shape, labels.shape)
        self.assertFalse(first.geometry_mismatch(labels))
        p.echoTime = 100.0
        p.repetitionTime = 4000.0
        second = bridge.node_to_volume(self.logic.updatePreview(p))
        self.assertFalse((first.array == second.array).all())
        p.previewMode, p.fullChain = "random", True
        self.logic.updatePreview(p)
        self.delayDisplay("Preview OK")

    def test_segmentation(self):
        from SpineSynthSegLib import contrast_preview as preview
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.inference import DEFAULT_MODEL
        from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network, save_checkpoint
        from SpineSynthSegLib.phantom import generate_phantom

        self.delayDisplay("Segmentation of a small synthetic volume in a background process")
        labels, table = generate_phantom(self._smallPhantom(), seed=1)
        image = preview.contrast_preview(labels, table, preview.PreviewSettings(tr=4000, te=90))
        inputNode = bridge.volume_to_node(slicer.mrmlScene, image, "phantom T2w")
        model = None
        if not DEFAULT_MODEL.is_file():  # no shipped model yet: a tiny untrained network exercises the path
            meta = ModelMeta(model=ModelConfig(features=(4, 4, 8, 8, 8, 4)), spacing=(3.0, 3.0, 3.0),
                             patch_size=(32, 32, 32))
            model = str(Path(tempfile.mkdtemp(prefix="SpineSynthSegTest-")) / "tiny.pt")
            save_checkpoint(model, build_network(meta.model), meta)
        codes = []
        process = self.logic.startSegmentation(inputNode, model, "cpu", onFinished=codes.append)
        process.waitForFinished(10 * 60 * 1000)
        self.assertEqual(codes, [0], self.logic.segmentationLog())
        node = self.logic.loadSegmentationResult(inputNode)
        seg = node.GetSegmentation()
        geometry = seg.GetConversionParameter(slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())
        self.assertTrue(geometry)  # references the input's grid
        if seg.GetNumberOfSegments():  # an untrained network may find nothing
            self.assertEqual(bridge.segmentation_to_volume(node, reference=inputNode).shape, image.shape)
        self.logic.discardSegmentationFiles()
        self.delayDisplay("Segmentation OK")

    def test_measurements(self):
        from SpineSynthSegLib import slicer_bridge as bridge
        from SpineSynthSegLib.phantom import generate_phantom, phantom_targets

        self.delayDisplay("Measurements of the phantom's levels")
        labels, table = generate_phantom(self._smallPhantom(), seed=2)
        seg = bridge.labels_to_segmentation(slicer.mrmlScene, phantom_targets(labels, table), name="phantom levels")
        tableNode = self.logic.measure(seg)
        self.assertGreater(tableNode.GetNumberOfRows(), 4)
        self.assertTrue(any(n.GetName() == "L3 anterior height" for n in self.logic.linesByLevel["L3"]))
        self.assertTrue(self.logic.jumpToRow(0))
        path = Path(tempfile.mkdtemp(prefix="SpineSynthSegTest-")) / "measurements.csv"
        self.logic.exportTable(tableNode, path)
        self.assertTrue(path.is_file())
        self.delayDisplay("Measurements OK")
