"""Training/validate_model.py: the contrast remaps of its robustness check, and its arguments."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import training_script


@pytest.fixture(scope="module")
def script():
    with training_script("validate_model") as module:
        yield module


def test_remaps_reverse_or_bend_the_tissue_order(script):
    rng = np.random.default_rng(0)
    image = np.concatenate([rng.normal(m, 5, 1000) for m in (20, 100, 180)]).reshape(30, 10, 10)
    means = lambda a: [float(a.reshape(3, -1)[i].mean()) for i in range(3)]
    assert script.remap_intensity(image, "none") is image
    inv = script.remap_intensity(image, "invert")
    assert inv.min() >= 0 and inv.max() <= 1
    assert np.argsort(means(inv)).tolist() == [2, 1, 0]  # dark <-> bright
    mid = [means(script.remap_intensity(image, g))[1] for g in ("gamma0.5", "gamma2")]
    linear = means(1 - inv)[1]
    assert mid[0] > linear > mid[1]  # gamma 0.5 brightens, 2 darkens the middle tissue
    with pytest.raises(ValueError, match="remap"):
        script.remap_intensity(image, "gamma3")


def test_arguments(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--out", "x"])
    assert "--model is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--relevel", "somewhere"])
    assert "--relevel needs --levels" in capsys.readouterr().err


def test_level_accuracy_counts_all_cases_and_each_group(script):
    def row(case, label, dice, scope="span", ref_empty=False):
        return {"case": case, "label": label, "dice": dice, "kind": "level", "scope": scope, "ref_empty": ref_empty}

    rows = [row("VB2_01", 18, 0.9), row("VB2_01", 19, 0.1), row("VB3_01", 20, 0.8), row("IVD_01", 124, 0.7),
            row("IVD_01", 123, 0.2), row("VB3_01", 21, 0.0, scope="raw"), row("VB3_01", 22, 0.0, ref_empty=True)]
    acc = script.level_accuracy(rows)
    assert acc["vertebrae"] == {"right": 2, "total": 3, "fraction": 0.6667}
    assert acc["discs"] == {"right": 1, "total": 2, "fraction": 0.5}
    assert acc["cases"] == {"total": 3, "with_a_wrong_level": ["IVD_01", "VB2_01"]}
    assert acc["groups"]["VB2"]["vertebrae"]["right"] == 1 and acc["groups"]["VB3"]["vertebrae"]["total"] == 1
    assert acc["groups"]["IVD"]["discs"] == {"right": 1, "total": 2, "fraction": 0.5}
