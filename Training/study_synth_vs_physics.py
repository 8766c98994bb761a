"""SynthSeg (domain randomisation) versus MR-physics synthesis on this project's data (seed 000).

    python Training/study_synth_vs_physics.py Training/recipes/study_small.json   # CPU, minutes
    python Training/study_synth_vs_physics.py Training/recipes/study_full.json    # GPU

Trains one model per arm of the study file (same label maps, steps, seed and network; only the
synthesis mode differs), segments the real validation cases with each model's last checkpoint (no
model selection on the cases that are scored), evaluates both against the manual labels within the
labelled span and raw, runs paired Wilcoxon tests per contrast group, and writes a Markdown report
(default ``Training/studies/<name>.md``) with the hardware, steps and times. Interrupted runs resume:
a finished arm is not trained again.

Study file: ``{"name": ..., "arms": {"synthseg": {"mode": "random"}, "physics": {"mode": "physics"}},
"recipe": {...}}`` where ``recipe`` holds `TrainConfig` fields (paths relative to the study file) and
each arm's dict overrides the recipe's ``synthesis`` section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from SpineSynthSegLib.evaluate import require_all_scored, run_evaluate
from SpineSynthSegLib.statistics import describe, paired_wilcoxon
from SpineSynthSegLib.train import TrainConfig, train
from SpineSynthSegLib.training_data import VALIDATION_CASES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_model import reference_set, segment_cases

PATH_KEYS = ("labelmaps", "output_dir", "shared_data", "init_from")
METRICS = (("dice", "Dice", True), ("hd95", "HD95 (mm)", False))


def load_study(path: Path) -> dict:
    study = json.loads(path.read_text())
    missing = {"name", "arms", "recipe"} - set(study)
    if missing:
        raise ValueError(f"{path}: study file lacks {sorted(missing)}")
    if len(study["arms"]) != 2:
        raise ValueError(f"{path}: a study compares exactly two arms, got {list(study['arms'])}")
    return study


def arm_recipes(study: dict, study_path: Path, run_root: Path) -> dict[str, Path]:
    """Write one training recipe per arm under ``run_root`` (absolute paths; checked by TrainConfig)."""
    base = study_path.parent.resolve()
    recipe = dict(study["recipe"])
    for key in PATH_KEYS:
        if recipe.get(key):
            recipe[key] = str((base / recipe[key]).resolve())
    run_root.mkdir(parents=True, exist_ok=True)
    out = {}
    for arm, synthesis in study["arms"].items():
        r = {**recipe, "name": arm, "output_dir": str(run_root), "validation_cases": [],
             "synthesis": {**recipe.get("synthesis", {}), **synthesis}}
        path = run_root / f"{arm}.json"
        path.write_text(json.dumps(r, indent=1))
        TrainConfig.load(path)  # fails early on a bad key
        out[arm] = path
    return out


def hardware(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def _labelled(group: str) -> str:
    return "disc" if group == "IVD" else "vertebral_body"


def _mean_sd(values: list[float]) -> str:
    """'mean (sd)' of the finite values (`statistics.describe`), '+k inf' when a distance is infinite."""
    d = describe(values)
    if d["mean"] is None:
        return f"n/a ({d['n_inf']} inf)" if d["n_inf"] else "n/a"
    return f"{d['mean']:.3f} ({d['std']:.3f})" + (f" +{d['n_inf']} inf" if d["n_inf"] else "")


def report(summary: dict, study: dict, arms: list[str], info: dict) -> str:
    """The Markdown report: setup, per-group metrics of both arms and the Wilcoxon tests."""
    rows = [r for r in summary["rows"] if r["kind"] == "semantic" and r["structure"] == _labelled(r["group"])]
    groups = sorted({r["group"] for r in rows})
    a, b = arms
    lines = [f"# Study `{study['name']}`: {a} vs {b} synthesis", "",
             f"Command: `{info['command']}`  ", f"Date: {info['date']}  ", f"Hardware: {info['hardware']}  ",
             f"Steps per arm: {info['steps']} (batch {study['recipe'].get('batch_size')}, patch "
             f"{study['recipe'].get('patch_size')}, network features {study['recipe'].get('model', {}).get('features')}); "
             f"training time: " + ", ".join(f"{arm} {s / 60:.1f} min" for arm, s in info["train_s"].items()), "",
             "Arms (synthesis settings over the recipe's): " + "; ".join(f"`{k}`: `{json.dumps(v)}`" for k, v in study["arms"].items()),
             "", ("Scored: the real validation cases (never training images), each model's last checkpoint, the "
             "labelled structure of each group (VB2/VB3 bodies, IVD discs), within the labelled span ('span', "
             "shared/data/README.md) and raw. Wilcoxon: paired signed-rank over cases (scipy), effect size = "
             "matched-pairs rank-biserial r (> 0: the first arm higher). With 3 cases per group the per-group "
             "test cannot reach p < 0.25; read the per-group rows as descriptive."), ""]
    comp = {(c["scope"], c["structure"], c["metric"], c["group"]): c for c in summary["comparison"]}
    for scope in ("span", "raw"):
        lines += [f"## Scope: {scope}", "", (f"| group | structure | n | metric | {a} mean (sd) | {b} mean (sd) | "
                  "p (Wilcoxon) | r | better |"), "|---|---|---|---|---|---|---|---|---|"]
        for group in [*groups, "all"]:
            sel = [r for r in rows if r["scope"] == scope and (group == "all" or r["group"] == group)]
            structures = sorted({r["structure"] for r in sel})
            for structure in structures:
                for metric, label, _ in METRICS:
                    vals = {m: [float(r[metric]) for r in sel if r["method"] == m and r["structure"] == structure]
                            for m in arms}
                    c = comp.get((scope, structure, metric, group), {})
                    p, r = c.get("p_value"), c.get("effect_size")
                    lines.append(f"| {group} | {structure} | {len(vals[a])} | {label} | {_mean_sd(vals[a])} | "
                                 f"{_mean_sd(vals[b])} | {'' if p is None else f'{p:.4f}'} | "
                                 f"{'' if r is None else f'{r:+.2f}'} | {c.get('better', '')} |")
        lines.append("")
    per_case = {case: {r["method"]: float(r["dice"]) for r in rows if r["case"] == case and r["scope"] == "span"}
                for case in sorted({r["case"] for r in rows})}
    paired = [c for c, v in per_case.items() if a in v and b in v]
    test = paired_wilcoxon([per_case[c][a] for c in paired], [per_case[c][b] for c in paired])
    lines += ["## All cases, labelled structure (span Dice)", "",
              f"{len(paired)} cases: {a} median {test.median_a:.3f}, {b} median {test.median_b:.3f}; paired Wilcoxon "
              f"p = {test.p_value:.4f}, rank-biserial r = {test.effect_size:+.2f}" + (f" ({test.note})" if test.note else ""),
              "", "| case | " + " | ".join(arms) + " |", "|---|---|---|"]
    for case, v in per_case.items():
        lines.append(f"| {case} | {v.get(a, float('nan')):.3f} | {v.get(b, float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="run folder root (default runs/)")
    p.add_argument("--report", type=Path, help="Markdown report (default Training/studies/<name>.md)")
    p.add_argument("--cases", nargs="*", default=list(VALIDATION_CASES))
    args = p.parse_args(argv)
    study = load_study(args.study)
    run_root = (args.runs / study["name"]).resolve()
    recipes = arm_recipes(study, args.study, run_root)
    cfg, _ = TrainConfig.load(next(iter(recipes.values())))
    data = Path(cfg.shared_data) / "lumbar_mri"
    if not (data / "cases.json").is_file():
        raise SystemExit(f"study needs the real validation cases: {data} not found")
    timing_path = run_root / "train_seconds.json"
    train_s = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    preds = {}
    for arm, recipe in recipes.items():
        if arm not in train_s:  # written once the arm has finished (a resumed arm's time is partial)
            t0 = time.perf_counter()
            result = train(recipe, device=args.device)
            if result["step"] < cfg.steps:
                raise SystemExit(f"{arm}: training stopped at step {result['step']} of {cfg.steps}")
            train_s[arm] = time.perf_counter() - t0
            timing_path.write_text(json.dumps(train_s))
        preds[arm] = run_root / arm / "pred"
        segment_cases(run_root / arm / "latest.pt", data, args.cases, preds[arm])
    arms = list(recipes)
    with tempfile.TemporaryDirectory() as tmp:
        ref, groups = reference_set(data, args.cases, Path(tmp))
        summary = run_evaluate(preds[arms[0]], ref, run_root / "report", groups_csv=groups, convention_ref="reference",
                               compare_dir=preds[arms[1]], names=tuple(arms), cases_json=data / "cases.json")
    require_all_scored(summary)
    info = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "date": time.strftime("%Y-%m-%d"), "hardware": hardware(args.device), "steps": cfg.steps, "train_s": train_s}
    out = args.report or Path(__file__).resolve().parent / "studies" / f"{study['name']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(summary, study, arms, info))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
