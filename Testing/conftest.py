"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRAINING = Path(__file__).resolve().parents[1] / "Training"


@contextlib.contextmanager
def training_script(name: str):
    """Import ``Training/<name>.py`` (``name`` may hold a folder: 'studies/x') as a module for the
    duration (registered in ``sys.modules``, so its dataclasses resolve their annotations through it)."""
    spec = importlib.util.spec_from_file_location(Path(name).name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture
def shared_data() -> Path:
    """The reference data folder (``../shared/data`` beside the repository); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not available at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def mrml():
    """A new MRML scene with Slicer's logics (`slicer_bridge.standalone_scene`), built from the REAL
    MRML classes of the PyPI package ``slicer-core``; skips where they are not installed."""
    try:
        import slicer
    except ImportError:
        slicer = None
    if not (hasattr(slicer, "vtkMRMLScene") and hasattr(slicer, "vtkSlicerSegmentationsModuleLogic")):
        pytest.skip("slicer-core (Kitware's MRML classes without Qt) is not installed: pip install slicer-core slicerio")
    from SpineSynthSegLib.slicer_bridge import standalone_scene

    return standalone_scene()
