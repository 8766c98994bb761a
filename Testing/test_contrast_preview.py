"""The Slicer module's synthetic-contrast preview (library only, no MRML)."""

from __future__ import annotations

import numpy as np
import pytest

from SpineSynthSegLib import contrast_preview as preview
from SpineSynthSegLib.io import Volume


@pytest.fixture(scope="module")
def phantom():
    from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom

    return generate_phantom(PhantomConfig(shape=(64, 48, 24), spacing=(3.0, 2.0, 2.0)), seed=0)


def test_contrast_preview_physics(phantom):
    vol, table = phantom
    t1w = preview.contrast_preview(vol, table, preview.PreviewSettings(tr=500, te=12))
    t2w = preview.contrast_preview(vol, table, preview.PreviewSettings(tr=4000, te=100))
    again = preview.contrast_preview(vol, table, preview.PreviewSettings(tr=500, te=12))
    assert t1w.shape == vol.shape and not t1w.geometry_mismatch(vol)
    assert t1w.array.dtype == np.float32 and 0.0 <= t1w.array.min() and t1w.array.max() <= 1.0
    np.testing.assert_array_equal(t1w.array, again.array)
    csf = next(e.id for e in table.entries if e.tissue == "csf")
    fat = next(e.id for e in table.entries if e.tissue == "fat")
    mean = {k: {t: float(img.array[vol.array == t].mean()) for t in (csf, fat)} for k, img in (("t1", t1w), ("t2", t2w))}
    assert mean["t1"][csf] < mean["t1"][fat]  # CSF dark on T1-weighted
    assert mean["t2"][csf] > mean["t1"][csf] / max(mean["t1"][fat], 1e-6) * mean["t2"][fat]  # brighter on T2w


def test_contrast_preview_random_full_chain(phantom):
    vol, table = phantom
    a = preview.contrast_preview(vol, table, preview.PreviewSettings(mode="random", seed=1, full_chain=True))
    b = preview.contrast_preview(vol, table, preview.PreviewSettings(mode="random", seed=2, full_chain=True))
    assert a.shape == vol.shape and not np.array_equal(a.array, b.array)


def test_qmri_preview_spin_echo():
    t1 = Volume(np.full((4, 4, 3), 800.0, np.float32))
    t1.array[0] = 300.0
    t2, pd = t1.with_array(np.full((4, 4, 3), 80.0, np.float32)), t1.with_array(np.ones((4, 4, 3), np.float32))
    out = preview.qmri_preview(t1, t2, pd, preview.PreviewSettings(sequence="spin_echo", tr=500, te=10))
    assert out.array[0].mean() > out.array[1].mean()  # short T1 is bright on T1-weighted spin echo
    with pytest.raises(ValueError, match="fat maps"):
        preview.qmri_preview(t1, t2, pd, preview.PreviewSettings(sequence="water_fat"))
