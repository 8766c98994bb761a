"""How far a global class-probability shift could move span Dice on the validation cases (a bound).

    python Training/studies/probability_shift_bound.py --model SpineSynthSegLib/models/default.pt \
        --shared ../shared/data --out runs/shift_bound.json

For each validation case the model's class probabilities are interpolated onto the image's 1 mm
grid, the labelled class (bodies; discs for IVD) gets a constant added to its probability before
the arg-max, and span Dice is scored as `validate_model.py` scores it. Choosing the best shift per
group afterwards is an oracle (it looks at the references): the figure is an upper bound on what
any threshold, calibration or bias rule at inference can give, not a setting to adopt. Post-
processing is left out (it only removes whole components, and the span rule drops those below the
labelled span). Real images are used for validation only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from SpineSynthSegLib.case_scoring import score_prediction, si_axis_of
from SpineSynthSegLib.evaluate_inputs import CaseFiles, load_case
from SpineSynthSegLib.grid_argmax import probabilities_on_grid
from SpineSynthSegLib.inference import Segmenter
from SpineSynthSegLib.io import Volume, read_image
from SpineSynthSegLib.training_data import VALIDATION_CASES

SHIFTS = (-0.4, -0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)


def span_dice(pred: np.ndarray, ref: np.ndarray, vol: Volume, cls: int) -> float:
    scored = score_prediction(pred, ref, vol.spacing, si_axis_of(vol.direction))
    return float(next(r["dice"] for r in scored["span"] if r["kind"] == "semantic" and r["label"] == cls))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    p.add_argument("--shared", default=str(Path(__file__).resolve().parents[3] / "shared" / "data"))
    p.add_argument("--out", default="runs/shift_bound.json")
    args = p.parse_args(argv)
    data = Path(args.shared) / "lumbar_mri"
    cases_info = json.loads((data / "cases.json").read_text())
    segmenter = Segmenter.from_checkpoint(args.model)
    rows = {}
    for case in VALIDATION_CASES:
        vol = read_image(data / "images" / f"{case}_img.nii.gz")
        ref = load_case(CaseFiles(labels=data / "labels" / f"{case}_seg.nii.gz"), "reference", case, cases_info).semantic
        cls = 2 if case.startswith("IVD") else 1
        result = segmenter(vol, keep_probabilities=True)
        probs = probabilities_on_grid(torch.from_numpy(result.probabilities), result.probability_grid, vol)
        scores = []
        for shift in SHIFTS:
            probs[cls] += shift
            scores.append(round(span_dice(probs.argmax(0).astype(np.uint8), ref, vol, cls), 4))
            probs[cls] -= shift
        rows[case] = {"as_segmented": round(span_dice(result.semantic.array, ref, vol, cls), 4), "shifted": scores}
        print(case, rows[case], flush=True)
    groups = {}
    for g in ("VB2", "VB3", "IVD"):
        mean = np.mean([r["shifted"] for c, r in rows.items() if c.startswith(g)], axis=0)
        best = int(np.argmax(mean))
        groups[g] = {"shift_0": round(float(mean[SHIFTS.index(0.0)]), 4), "best_shift": SHIFTS[best],
                     "best": round(float(mean[best]), 4), "means": [round(float(v), 4) for v in mean]}
        print(g, groups[g])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"shifts": SHIFTS, "cases": rows, "groups": groups}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
