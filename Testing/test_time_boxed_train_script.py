"""Training/time_boxed_train.py: the step count that fits a deadline, and a whole time-boxed run."""

import json
import time
from pathlib import Path

from conftest import training_script
from test_train import recipe  # noqa: F401  (the tiny phantom recipe fixture)

from SpineSynthSegLib.model import load_checkpoint


def test_steps_that_fit():
    with training_script("time_boxed_train") as tbt:
        assert tbt.steps_that_fit(100.0, 1.0, 10.0) == 81  # 90 % of the 90 s left after loading
        assert tbt.steps_that_fit(100.0, 0.5, 10.0, margin=1.0) == 180
        assert tbt.steps_that_fit(5.0, 1.0, 10.0) == 0  # loading alone overruns


def test_write_recipe_makes_paths_absolute_and_sets_steps(recipe, tmp_path):  # noqa: F811
    data = json.loads(recipe.read_text())
    data.update(validation_cases=["VB2_05"], checkpoint_every=100)
    src = recipe.parent / "src" / "r.json"
    src.parent.mkdir(exist_ok=True)
    src.write_text(json.dumps(dict(data, labelmaps="../maps")))  # relative to the recipe: made absolute
    with training_script("time_boxed_train") as tbt:
        out = json.loads(tbt.write_recipe(src, tmp_path / "work", "boxed", 40, no_validation=True).read_text())
        kept = json.loads(tbt.write_recipe(src, tmp_path / "work", "kept", 400, no_validation=False).read_text())
    assert out["steps"] == 40 and out["name"] == "boxed" and out["output_dir"] == str(tmp_path / "work")
    assert out["checkpoint_every"] == 40  # the last step always checkpoints
    assert "validation_cases" not in out and kept["validation_cases"] == ["VB2_05"]
    assert out["labelmaps"] == str(recipe.parent / "maps")
    assert kept["checkpoint_every"] == 100


def test_write_recipe_resolves_a_relative_work_folder(recipe, tmp_path, monkeypatch):  # noqa: F811
    # the copy lives inside the work folder, so a relative output_dir would nest the run in itself
    monkeypatch.chdir(tmp_path)
    with training_script("time_boxed_train") as tbt:
        path = tbt.write_recipe(recipe, Path("rel/work"), "boxed", 10, no_validation=True)
    assert path == Path("rel/work/boxed.recipe.json")
    assert json.loads(path.read_text())["output_dir"] == str(tmp_path / "rel" / "work")


def test_time_boxed_run_ends_its_schedule_before_the_deadline(recipe, tmp_path, capsys):  # noqa: F811
    work = tmp_path / "work"
    deadline = time.time() + 300  # room for a slow, shared machine; --max-steps keeps the run short
    with training_script("time_boxed_train") as tbt:
        assert tbt.main([str(recipe), "--deadline", str(deadline), "--work", str(work), "--device", "cpu",
                         "--warm", "1", "--timed", "2", "--max-steps", "4"]) == 0
    used = json.loads((work / "tiny" / "recipe_used.json").read_text())
    assert 1 <= used["steps"] <= 4
    _, meta = load_checkpoint(work / "tiny" / "latest.pt")
    assert meta.step == used["steps"]  # the schedule ran to its end, not cut short
    assert not (work / "tiny_timing").exists()  # the timing run is cleaned away
    assert not (work / "tiny_timing.recipe.json").exists()
    # a second call on the same folder would resume that run under a new step count: refused
    state = (work / "tiny" / "state.pt").read_bytes()
    with training_script("time_boxed_train") as tbt:
        assert tbt.main([str(recipe), "--deadline", str(time.time() + 20), "--work", str(work), "--device", "cpu"]) == 2
    assert "already there" in capsys.readouterr().err
    assert (work / "tiny" / "state.pt").read_bytes() == state


def test_no_time_left_is_an_error(recipe, tmp_path, capsys):  # noqa: F811
    with training_script("time_boxed_train") as tbt:
        assert tbt.main([str(recipe), "--deadline", str(time.time() - 1), "--work", str(tmp_path / "w"),
                         "--device", "cpu", "--warm", "1", "--timed", "1"]) == 1
    assert "no time left" in capsys.readouterr().err
    assert not (tmp_path / "w" / "tiny").exists()


def test_lease_train_pair_keeps_the_last_weights_of_each_run(recipe, tmp_path):  # noqa: F811
    """Training/lease/train_pair.sh on the CPU: two runs side by side, each run's last weights copied out."""
    import os
    import subprocess
    import sys

    second = recipe.parent / "tiny2.json"
    second.write_text(json.dumps(dict(json.loads(recipe.read_text()), name="tiny2", seed=5)))
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    script = Path(__file__).resolve().parents[1] / "Training" / "lease" / "train_pair.sh"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               WORK=str(work), WARM="1", TIMED="1", MAX_STEPS="3")
    proc = subprocess.run(["bash", str(script), "cpu", "300", str(out), str(recipe), str(second)],
                          check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("tiny", "tiny2"):
        steps = json.loads((work / name / "recipe_used.json").read_text())["steps"]
        _, meta = load_checkpoint(out / f"{name}_step{steps:05d}.pt")  # its sidecar came along
        assert meta.step == steps and 1 <= steps <= 3
    assert len(list(out.iterdir())) <= 8  # what the device tool brings back
    assert not (Path(__file__).resolve().parents[1] / "runs" / "gpu" / "tiny").exists()  # WORK was used
