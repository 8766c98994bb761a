"""Training/validate_other_contrasts.py: its references read the shared samples' label schemes right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import training_script


@pytest.fixture(scope="module")
def script():
    with training_script("validate_other_contrasts") as module:
        yield module


@pytest.mark.parametrize("name, bodies, has_discs", [
    ("tptbox_ct_L2-L4", {21, 22, 23}, False),
    ("tptbox_mri_C5-C7", {5, 6, 7}, True),
    ("totalseg_ct_T11-S1", {18, 19, 20, 21, 22, 23, 24, 26}, True),
])
def test_references_hold_bodies_with_levels_and_discs_where_labelled(script, shared_data, name, bodies, has_discs):
    sample = next(s for s in script.SAMPLES if s.name == name)
    sem, inst = script.reference(sample, shared_data / "samples")
    assert set(np.unique(sem).tolist()) == ({0, 1, 2} if has_discs else {0, 1})
    assert set(np.unique(inst).tolist()) - {0} <= bodies and len(set(np.unique(inst).tolist()) - {0}) >= 3
    assert ((inst > 0) == (sem == 1)).mean() > 0.97  # level ids cover the bodies, nothing else


def test_score_finds_a_perfect_prediction_perfect(script, shared_data, tmp_path):
    from SpineSynthSegLib.io import read_image, write_volume

    sample = script.SAMPLES[0]
    root = shared_data / "samples"
    sem, inst = script.reference(sample, root)
    image = read_image(root / sample.image)
    stem = Path(sample.image).name.removesuffix(".nii.gz")
    write_volume(image.with_array(sem.astype(np.uint8)), tmp_path / f"{stem}_semantic.nii.gz")
    write_volume(image.with_array(inst.astype(np.int16)), tmp_path / f"{stem}_instances.nii.gz")
    row = script.score(sample, root, tmp_path)
    assert row["vertebral_body_span"] == 1.0 and row["levels_right"] == "3/3"
