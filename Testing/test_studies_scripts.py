"""Training/studies/phantom_end_to_end.py: the chain after segmentation scores the truth perfectly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import training_script

from SpineSynthSegLib.io import Volume
from SpineSynthSegLib.labels import semantic_map
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets


@pytest.fixture(scope="module")
def e2e():
    with training_script("studies/phantom_end_to_end") as module:
        yield module


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


@pytest.mark.parametrize("kind", ["STIR", "Dixon_water"])
def test_shipped_model_on_a_fractured_phantom_in_an_unseen_contrast(e2e, kind):
    """The shipped model, end to end, on contrasts no validation image has: six levels named right (this
    phantom's S1 has no sacral shape and no disc below it) and the grade 3 fracture of L1 found."""
    from SpineSynthSegLib.inference import Segmenter

    config = PhantomConfig(sacrum_below_s1=False, wedge_fracture_prob=1.0, wedge_fracture_loss=(0.2, 0.6))
    row = e2e.score_case(Segmenter.from_checkpoint(), config, 4, kind)
    assert row["named_right"] == row["vertebrae"] == 6, row["level_warnings"]
    assert row["dice_body"] > 0.85 and row["dice_disc"] > 0.85
    (fracture,) = row["fractured"]
    assert fracture["truth_grade"] == 3 and fracture["grade"] >= 2
