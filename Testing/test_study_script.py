"""Training/study_synth_vs_physics.py: per-arm recipes and study-file checks (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TRAINING, training_script

from SpineSynthSegLib.train import TrainConfig


@pytest.fixture(scope="module")
def study_module():
    with training_script("study_synth_vs_physics") as module:
        yield module


def test_arm_recipes_share_everything_but_the_synthesis_mode(study_module, tmp_path):
    folder = tmp_path / "recipes"
    folder.mkdir()
    study = {"name": "s", "arms": {"synthseg": {"mode": "random"}, "physics": {"mode": "physics"}},
             "recipe": {"labelmaps": "../maps", "shared_data": "../data", "steps": 7, "synthesis": {"physics_fraction": 0.3}}}
    path = folder / "s.json"
    path.write_text(json.dumps(study))
    recipes = study_module.arm_recipes(study_module.load_study(path), path, tmp_path / "runs" / "s")
    assert list(recipes) == ["synthseg", "physics"]
    loaded = {arm: TrainConfig.load(p)[0] for arm, p in recipes.items()}
    for arm, cfg in loaded.items():
        assert cfg.name == arm and cfg.steps == 7 and cfg.validation_cases == ()
        assert Path(cfg.labelmaps) == (tmp_path / "maps").resolve()  # relative to the study file
        assert Path(cfg.output_dir) == tmp_path / "runs" / "s"
    assert loaded["synthseg"].synthesis == {"physics_fraction": 0.3, "mode": "random"}
    assert loaded["physics"].synthesis["mode"] == "physics"


def test_shipped_study_files_are_valid(study_module, tmp_path):
    for name in ("study_small", "study_cpu", "study_full"):
        path = TRAINING / "recipes" / f"{name}.json"
        recipes = study_module.arm_recipes(study_module.load_study(path), path, tmp_path / name)
        steps = {TrainConfig.load(p)[0].steps for p in recipes.values()}
        assert len(steps) == 1


def test_bad_study_files_are_refused(study_module, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "x", "arms": {"a": {}, "b": {}, "c": {}}, "recipe": {}}))
    with pytest.raises(ValueError, match="exactly two arms"):
        study_module.load_study(path)
    path.write_text(json.dumps({"name": "x", "arms": {"a": {}, "b": {}}}))
    with pytest.raises(ValueError, match="recipe"):
        study_module.load_study(path)
    path.write_text(json.dumps({"name": "x", "arms": {"a": {}, "b": {}}, "recipe": {"stepz": 3}}))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        study_module.arm_recipes(study_module.load_study(path), path, tmp_path / "r")
