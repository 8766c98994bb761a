"""End to end on fractured phantoms: segment five MR contrasts, name the levels, measure, grade.

    python Training/studies/phantom_end_to_end.py --n 8 --out runs/phantom_e2e.json

Each phantom (`phantom.generate_phantom`, a column ending at S1 as in the demo) has one anterior
wedge fracture, 20-60 % height loss. Its image is drawn by MR physics with mid-range tissue values
and 4 mm sagittal slices for every sequence in `demo_segment.CONTRASTS` (T1w and T2w spin echo,
STIR, T1w spoiled gradient echo, Dixon water: STIR, GRE and water are contrasts no validation
image has). The model segments it, `assign_levels` names the levels and `measure_volume` measures
the instance map; the same measurement of the phantom's own label map is the reference. Reported
per contrast: body and disc Dice, vertebrae named right (Dice >= 0.5 with the same-named truth
level), the Genant grade of every body measured in both (agreement), the fractured body's grade
(right; found, i.e. grade >= 1, where the truth reaches grade 1; its height-loss error in percentage
points, negative when under-estimated) and the absolute error of the anterior, middle and posterior
heights (mm).
Phantoms are drawn by the same generator as some training maps (15 % of the samples), so these
figures are optimistic for real anatomy; they check the chain, contrasts and grading together.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from SpineSynthSegLib.demo_segment import CONTRASTS, contrast_image
from SpineSynthSegLib.inference import Segmenter
from SpineSynthSegLib.instances import assign_levels
from SpineSynthSegLib.labels import is_vertebra, semantic_map
from SpineSynthSegLib.measure import SACRUM, measure_volume
from SpineSynthSegLib.metrics import dice
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom, phantom_targets
from SpineSynthSegLib.phantom_truth import phantom_levels

HEIGHTS = ("anterior_height_mm", "middle_height_mm", "posterior_height_mm")


def bodies_measured(instances) -> dict[int, dict]:
    """Vertebra id -> measured values, for every body above S1 that `measure_volume` measured."""
    return {lev.label: lev.values for lev in measure_volume(instances)
            if lev.kind == "vertebra" and lev.label != SACRUM and lev.values.get("genant_grade") is not None}


def _mm(measured: dict[int, dict], v: int, key: str) -> float | None:
    value = measured.get(v, {}).get(key)
    return None if value is None else round(value, 1)


def score_case(segmenter: Segmenter, config: PhantomConfig, seed: int, kind: str) -> dict:
    vol, table = generate_phantom(config, seed)
    truth = phantom_targets(vol, table)
    truth_sem = semantic_map(truth.array)
    fractured = [lev.label for lev in phantom_levels(config, seed) if lev.kind == "body" and lev.fracture_loss > 0]
    result = segmenter(contrast_image(vol, table, kind, seed=seed))
    instances, report = assign_levels(result.semantic)
    levels = [int(v) for v in np.unique(truth.array) if v and is_vertebra(int(v))]
    named = sum(dice(instances.array == v, truth.array == v) >= 0.5 for v in levels)
    ref, pred = bodies_measured(truth), bodies_measured(instances)
    both = sorted(set(ref) & set(pred))
    errors = [abs(pred[v][h] - ref[v][h]) for v in both for h in HEIGHTS if pred[v][h] is not None and ref[v][h] is not None]
    return {
        "seed": seed, "contrast": kind,
        "dice_body": round(dice(result.semantic.array == 1, truth_sem == 1), 4),
        "dice_disc": round(dice(result.semantic.array == 2, truth_sem == 2), 4),
        "vertebrae": len(levels), "named_right": int(named), "anchor": report.get("anchor"),
        "level_warnings": report.get("warnings", []),
        "bodies_graded": len(both), "grades_agree": sum(pred[v]["genant_grade"] == ref[v]["genant_grade"] for v in both),
        "bodies_in_truth": len(ref),
        "fractured": [{"level": v, "truth_grade": ref.get(v, {}).get("genant_grade"),
                       "grade": pred.get(v, {}).get("genant_grade"),
                       "truth_loss_percent": round(ref[v]["height_loss_percent"], 1) if v in ref else None,
                       "loss_percent": round(pred[v]["height_loss_percent"], 1) if v in pred else None,
                       "truth_heights_mm": [_mm(ref, v, h) for h in HEIGHTS], "heights_mm": [_mm(pred, v, h) for h in HEIGHTS]}
                      for v in fractured],
        "height_errors_mm": [round(e, 2) for e in errors],
    }


def summarise(rows: list[dict]) -> dict:
    out = {}
    for kind in dict.fromkeys(r["contrast"] for r in rows):
        sel = [r for r in rows if r["contrast"] == kind]
        frac = [f for r in sel for f in r["fractured"]]
        graded = [f for f in frac if (f["truth_grade"] or 0) >= 1]  # the wedge reaches Genant grade 1 or more
        loss = [f["loss_percent"] - f["truth_loss_percent"] for f in frac
                if f["loss_percent"] is not None and f["truth_loss_percent"] is not None]
        errors = [e for r in sel for e in r["height_errors_mm"]]
        out[kind] = {
            "dice_body": round(float(np.mean([r["dice_body"] for r in sel])), 3),
            "dice_disc": round(float(np.mean([r["dice_disc"] for r in sel])), 3),
            "named_right": f"{sum(r['named_right'] for r in sel)}/{sum(r['vertebrae'] for r in sel)}",
            "grades_agree": f"{sum(r['grades_agree'] for r in sel)}/{sum(r['bodies_graded'] for r in sel)}",
            "bodies_graded": f"{sum(r['bodies_graded'] for r in sel)}/{sum(r['bodies_in_truth'] for r in sel)}",
            "fractures_graded_right": f"{sum(f['grade'] == f['truth_grade'] for f in frac)}/{len(frac)}",
            "fractures_found": f"{sum((f['grade'] or 0) >= 1 for f in graded)}/{len(graded)}",
            "fracture_loss_error_percent_median": round(float(np.median(loss)), 1) if loss else None,
            "height_error_mm_median": round(float(np.median(errors)), 2) if errors else None,
            "height_error_mm_p90": round(float(np.percentile(errors, 90)), 2) if errors else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--n", type=int, default=8, help="phantoms (seeds 0..n-1)")
    p.add_argument("--contrasts", nargs="+", default=list(CONTRASTS), choices=list(CONTRASTS))
    p.add_argument("--phantom", default="{}", metavar="JSON",
                   help='PhantomConfig fields to change, e.g. \'{"top_level": "T11", "shape": [192, 112, 64]}\'')
    p.add_argument("--out", default="runs/phantom_e2e.json")
    args = p.parse_args(argv)
    fields = {"sacrum_below_s1": False, "wedge_fracture_prob": 1.0, "wedge_fracture_loss": (0.2, 0.6)}
    config = PhantomConfig(**{**fields, **json.loads(args.phantom)})
    segmenter = Segmenter.from_checkpoint(args.model)
    rows = []
    for seed in range(args.n):
        for kind in args.contrasts:
            rows.append(score_case(segmenter, config, seed, kind))
            r = rows[-1]
            print(seed, kind, r["dice_body"], r["dice_disc"], f"{r['named_right']}/{r['vertebrae']}",
                  f"grades {r['grades_agree']}/{r['bodies_graded']}", r["fractured"], flush=True)
    summary = summarise(rows)
    for kind, s in summary.items():
        print(kind, s)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"summary": summary, "cases": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
