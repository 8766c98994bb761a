"""Run ``spinesynthseg segment`` in a background process (qt.QProcess) so Slicer stays responsive.

`SegmentationProcess` starts the library's command line with Slicer's Python (``PythonSlicer``)
and ``PYTHONPATH`` pointing at the folder that holds ``SpineSynthSegLib``, streams its output
lines to ``onOutput``, and calls ``onFinished(exitCode)`` once (-1 when cancelled or crashed).
`segmentCommand` builds the argument list; it is a plain function so it can be checked without
Qt.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def pythonExecutable() -> str:
    """Slicer's Python launcher (PythonSlicer), else this interpreter."""
    found = shutil.which("PythonSlicer")
    if found:
        return found
    beside = Path(sys.executable).with_name("PythonSlicer" + (".exe" if os.name == "nt" else ""))
    return str(beside) if beside.exists() else sys.executable


def segmentCommand(inputPath: str, outputDir: str, modelPath: str | None = None, device: str = "auto",
                   tta: bool = False) -> list[str]:
    """Arguments for ``python -m SpineSynthSegLib.cli`` (after the program)."""
    args = ["-m", "SpineSynthSegLib.cli", "-v", "segment", str(inputPath), "-o", str(outputDir), "--device", device,
            "--format", "nifti", "--no-progress", "--overwrite"]
    if modelPath:
        args += ["--model", str(modelPath)]
    if tta:
        args.append("--tta")
    return args


class SegmentationProcess:
    """A cancellable background process with line-wise output.

    Args:
        onOutput: called with each chunk of output text (stdout and stderr merged).
        onFinished: called once with the exit code (-1 when cancelled or crashed).
    """

    def __init__(self, onOutput: Callable[[str], None] | None = None,
                 onFinished: Callable[[int], None] | None = None):
        import qt

        self.onOutput = onOutput or (lambda text: None)
        self.onFinished = onFinished or (lambda code: None)
        self._cancelled = False
        self.output: list[str] = []
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        self.process.readyRead.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)

    def start(self, args: Sequence[str], libraryDir: str | None = None, program: str | None = None) -> None:
        import qt

        env = qt.QProcessEnvironment.systemEnvironment()
        if libraryDir:
            old = env.value("PYTHONPATH")
            env.insert("PYTHONPATH", libraryDir + (os.pathsep + old if old else ""))
        env.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(env)
        self._cancelled = False
        self.output = []
        self.process.start(program or pythonExecutable(), list(args))

    def isRunning(self) -> bool:
        import qt

        return self.process.state() != qt.QProcess.NotRunning

    def cancel(self) -> None:
        if self.isRunning():
            self._cancelled = True
            self.process.kill()

    def waitForFinished(self, msecs: int = -1) -> bool:
        return self.process.waitForFinished(msecs)

    def _read(self) -> None:
        text = bytes(self.process.readAll().data()).decode(errors="replace")
        if text:
            self.output.append(text)
            self.onOutput(text)

    def _finished(self, exitCode, exitStatus=None) -> None:
        import qt

        self._read()
        crashed = exitStatus == qt.QProcess.CrashExit
        self.onFinished(-1 if self._cancelled or crashed else int(exitCode))

    def _error(self, error) -> None:
        import qt

        if error == qt.QProcess.FailedToStart:
            self.output.append(f"could not start {self.process.program()}")
            self.onFinished(-1)
