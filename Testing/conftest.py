"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The reference data folder (``../shared/data`` beside the repository); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not available at {SHARED_DATA}")
    return SHARED_DATA
