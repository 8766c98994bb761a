"""Run a training recipe inside a fixed wall-clock budget (a lent GPU's minutes, a cluster slot).

    python Training/time_boxed_train.py Training/recipes/lumbar_gpu_ft.json --deadline EPOCH_S \
        --work /tmp/runs --device cuda

The learning-rate schedule runs over the recipe's ``steps``, so stopping a run early leaves it at
a high rate. This script first times a few steps of the recipe on the device (in a scratch run,
while any other jobs sharing the device run too), then trains with ``steps`` set to what fits
before the deadline, so the schedule ends on time. The recipe actually run (with its step count)
is written beside the run as ``recipe_used.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from SpineSynthSegLib.train import TrainConfig, resolve_path, train


def write_recipe(recipe: Path, work: Path, name: str, steps: int, no_validation: bool) -> Path:
    """A copy of ``recipe`` with absolute paths, its run under ``work`` and ``steps`` steps."""
    cfg, base = TrainConfig.load(recipe)
    data = json.loads(recipe.read_text())
    for key in ("labelmaps", "shared_data", "init_from"):
        if data.get(key):
            data[key] = str(resolve_path(base, data[key]))
    data.update(name=name, output_dir=str(work.resolve()), steps=int(steps))  # the copy lives in work: no relative path
    data["checkpoint_every"] = min(int(data.get("checkpoint_every", cfg.checkpoint_every)), int(steps))
    if no_validation:
        data.pop("validation_cases", None)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.recipe.json"
    path.write_text(json.dumps(data, indent=1))
    return path


def time_steps(recipe: Path, work: Path, device: str, no_validation: bool, warm: int, timed: int) -> tuple[float, float]:
    """Seconds per step and seconds to set up a run, from a scratch run of ``warm`` then ``timed`` steps.

    The warm-up call absorbs the device's one-off start (CUDA context, kernel selection); the
    second call, in the same process, is timed: its loop gives the step time, the rest the set-up.
    """
    name = Path(recipe).stem + "_timing"
    path = write_recipe(recipe, work, name, 10**6, no_validation)
    train(path, device=device, max_steps=warm, progress=False, keep_maps=True)  # the maps stay loaded
    t0 = time.perf_counter()
    result = train(path, device=device, max_steps=timed, progress=False, keep_maps=True)
    wall = time.perf_counter() - t0
    shutil.rmtree(work / name, ignore_errors=True)
    path.unlink()
    return result["loop_seconds"] / timed, wall - result["loop_seconds"]


def steps_that_fit(seconds_left: float, per_step: float, load_s: float, margin: float = 0.9) -> int:
    """Steps of ``per_step`` seconds that fit in ``seconds_left`` after loading, with a safety margin."""
    return max(int(margin * (seconds_left - load_s) / per_step), 0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", type=Path)
    p.add_argument("--deadline", type=float, required=True, help="wall-clock end, seconds since the epoch")
    p.add_argument("--work", type=Path, required=True, help="folder for the run")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-validation", action="store_true", help="drop the recipe's validation cases (no real images here)")
    p.add_argument("--warm", type=int, default=5)
    p.add_argument("--timed", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=None, help="at most this many steps, however many fit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = TrainConfig.load(args.recipe)[0].name
    if (args.work / name / "state.pt").exists():  # it would resume under a schedule that no longer fits
        print(f"{args.work / name}: a run of this name is already there; use another --work folder", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    per_step, load_s = time_steps(args.recipe, args.work, args.device, args.no_validation, args.warm, args.timed)
    steps = steps_that_fit(args.deadline - time.time(), per_step, load_s)
    if args.max_steps is not None:
        steps = min(steps, args.max_steps)
    print(f"{args.recipe.name}: {per_step:.3f} s/step, {load_s:.1f} s to load, {steps} steps fit", flush=True)
    if steps < 1:
        print(f"{args.recipe.name}: no time left for training", file=sys.stderr)
        return 1
    path = write_recipe(args.recipe, args.work, name, steps, args.no_validation)
    result = train(path, device=args.device, progress=False)
    shutil.copy(path, args.work / name / "recipe_used.json")
    print(f"{name}: {result['step']} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
