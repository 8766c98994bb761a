"""Training/studies: the probability-shift bound's interpolation and the phantom end-to-end chain."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import training_script

from SpineSynthSegLib.grid_argmax import argmax_on_grid
from SpineSynthSegLib.io import Volume, reorient
from SpineSynthSegLib.labels import semantic_map
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets


@pytest.fixture(scope="module")
def bound():
    with training_script("studies/probability_shift_bound") as module:
        yield module


@pytest.fixture(scope="module")
def e2e():
    with training_script("studies/phantom_end_to_end") as module:
        yield module


def _smooth_probs(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = torch.nn.functional.avg_pool3d(torch.as_tensor(rng.normal(size=(1, 3, *shape)), dtype=torch.float32),
                                            5, stride=1, padding=2)[0]
    return torch.softmax(4 * logits, dim=0).numpy()


def test_probabilities_on_agrees_with_the_product_argmax(bound):
    source = Volume(np.zeros((20, 24, 28), np.uint8), (1.5, 1.5, 1.5), (3.0, -2.0, 1.0), np.diag([-1.0, -1.0, 1.0]))
    target_ras = Volume(np.zeros((29, 35, 41), np.uint8), (1.0, 1.0, 1.0), (3.2, -2.1, 1.3), np.diag([-1.0, -1.0, 1.0]))
    target, _ = reorient(target_ras, "IPR")  # another axis order and signs, as the validation images have
    probs = _smooth_probs(source.shape)
    sampled = bound.probabilities_on(probs, source, target)
    assert sampled.shape == (3, *target.shape)
    assert np.allclose(sampled.sum(0), 1.0, atol=1e-5)
    expected = argmax_on_grid(torch.as_tensor(probs), source, target)
    assert (sampled.argmax(0) == expected).mean() > 0.999  # ties aside, the product's own mapping


def test_probabilities_on_the_same_grid_is_the_identity(bound):
    grid = Volume(np.zeros((12, 10, 14), np.uint8), (2.0, 1.0, 1.5), (0.0, 0.0, 0.0), np.eye(3))
    probs = _smooth_probs(grid.shape, seed=1)
    assert np.allclose(bound.probabilities_on(probs, grid, grid), probs, atol=1e-5)


class _TruthSegmenter:
    """Returns the phantom's own semantic map: the chain after segmentation must then score perfectly."""

    def __init__(self, semantic: Volume) -> None:
        self.semantic = semantic

    def __call__(self, image: Volume) -> SimpleNamespace:
        assert image.shape == self.semantic.shape
        return SimpleNamespace(semantic=self.semantic)


def test_phantom_chain_scores_the_truth_perfectly(e2e):
    config = PhantomConfig(sacrum_below_s1=False, wedge_fracture_prob=1.0, wedge_fracture_loss=(0.5, 0.5))
    vol, table = generate_phantom(config, seed=0)
    truth = phantom_targets(vol, table)
    row = e2e.score_case(_TruthSegmenter(truth.with_array(semantic_map(truth.array))), config, 0, "STIR")
    assert row["dice_body"] == 1.0 and row["dice_disc"] == 1.0
    assert row["named_right"] == row["vertebrae"] == 6
    assert row["bodies_graded"] == row["bodies_in_truth"] == row["grades_agree"] == 5
    assert max(row["height_errors_mm"]) == 0.0
    (fracture,) = row["fractured"]
    assert fracture["grade"] == fracture["truth_grade"] >= 2  # a 50 % anterior loss
    summary = e2e.summarise([row, {**row, "named_right": 4, "grades_agree": 3}])["STIR"]
    assert summary["named_right"] == "10/12" and summary["grades_agree"] == "8/10"
    assert summary["fractures_found"] == "2/2" and summary["height_error_mm_median"] == 0.0
