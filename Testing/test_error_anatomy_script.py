"""Training/error_anatomy.py: the Dice-loss parts add up, edge offsets read a shift, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import training_script


@pytest.fixture(scope="module")
def script():
    with training_script("error_anatomy") as module:
        yield module


def _box(shape=(30, 40, 60), lo=(5, 10, 15), hi=(25, 30, 45)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return m


def test_loss_parts_add_up_to_one_minus_dice(script):
    ref = _box()
    pred = np.roll(ref, 1, axis=2)  # one voxel superior: a 1-voxel FP cap and a 1-voxel FN cap
    pred[5:7] = False  # the two leftmost reference slices missed
    parts = script.loss_parts(ref, pred, (1.0, 1.0, 2.0), lateral_mm=2.0)
    fp = sum(v for k, v in parts.items() if k.startswith("fp "))
    fn = sum(v for k, v in parts.items() if k.startswith("fn ") and "lateral" not in k)
    assert fp + fn == pytest.approx(1.0 - parts["dice"])
    total = ref.sum() + pred.sum()
    assert parts["fp 1-2 mm"] == pytest.approx(18 * 20 / total)  # the cap is 2 mm out (S-I spacing 2)
    assert parts["fp 0-1 mm"] == 0.0
    # lateral FN (two outermost slices each side): the two missed slices whole (2 x 20 x 30) and
    # the bottom cap's row in the two right-hand ones (2 x 20)
    assert parts["fn lateral"] == pytest.approx((2 * 20 * 30 + 2 * 20) / total)
    with pytest.raises(ValueError, match="empty"):
        script.loss_parts(np.zeros_like(ref), pred, (1.0, 1.0, 1.0))


def test_edge_offsets_read_a_shift_and_a_thickening(script):
    ref = _box()
    shifted = np.roll(ref, 2, axis=2)  # 2 voxels superior at 1.5 mm
    out = script.edge_offsets(ref, shifted, (1.0, 1.0, 1.5))
    assert out["superior"] == pytest.approx(3.0) and out["inferior"] == pytest.approx(-3.0)
    assert out["anterior"] == pytest.approx(0.0) and out["posterior"] == pytest.approx(0.0)
    grown = ref.copy()
    grown[5:25, 30:31, 15:45] = True  # one voxel more anterior (RAS axis 1)
    out = script.edge_offsets(ref, grown, (1.0, 1.0, 1.0))
    assert out["anterior"] == pytest.approx(1.0) and out["posterior"] == 0.0 and out["superior"] == 0.0
    assert np.isnan(script.edge_offsets(ref, np.zeros_like(ref), (1.0, 1.0, 1.0))["superior"])


def test_cli_scores_a_case_and_refuses_a_missing_one(script, tmp_path, capsys):
    from SpineSynthSegLib.io import Volume, write_volume

    ref = np.zeros((30, 40, 120), np.uint8)
    ref[5:25, 10:30, 10:40] = 3  # two bodies with a disc space between them
    ref[5:25, 10:30, 48:78] = 4
    labels = tmp_path / "lumbar_mri" / "labels"
    labels.mkdir(parents=True)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    ras = np.diag([-1.0, -1.0, 1.0])  # LPS direction of a RAS array
    write_volume(Volume(ref, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ras), labels / "VB3_02_seg.nii.gz")
    pred = (ref > 0).astype(np.uint8)
    pred[5:25, 10:30, 100:110] = 1  # far above the labelled span: not counted
    write_volume(Volume(pred, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ras), pred_dir / "VB3_02_img_semantic.nii.gz")
    assert script.main(["--pred", str(pred_dir), "--shared", str(tmp_path), "--cases", "VB3_02"]) == 0
    out = capsys.readouterr().out
    assert "| VB3_02 | 1.000 | 0.000 |" in out and "| **VB3 median** | 1.000 |" in out
    assert script.main(["--pred", str(pred_dir), "--shared", str(tmp_path), "--cases", "VB3_20"]) == 1
    assert "VB3_20: missing" in capsys.readouterr().err
    write_volume(Volume(pred[:20], (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ras), pred_dir / "VB3_02_img_semantic.nii.gz")
    assert script.main(["--pred", str(pred_dir), "--shared", str(tmp_path), "--cases", "VB3_02"]) == 1
    assert "VB3_02:" in (err := capsys.readouterr().err) and "differs from the reference" in err
    write_volume(Volume(np.zeros_like(ref), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ras), labels / "VB3_02_seg.nii.gz")
    write_volume(Volume(pred, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ras), pred_dir / "VB3_02_img_semantic.nii.gz")
    assert script.main(["--pred", str(pred_dir), "--shared", str(tmp_path), "--cases", "VB3_02"]) == 1
    assert "VB3_02: empty reference" in capsys.readouterr().err
