"""Training/label_geometry.py: thickness and area of boxes, per-map medians, the table."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import training_script


@pytest.fixture(scope="module")
def script():
    with training_script("label_geometry") as module:
        yield module


@pytest.mark.parametrize("si_axis", [0, 2])
def test_box_thickness_and_area_in_mm(script, si_axis):
    spacing = (2.0, 1.5, 1.0)
    mask = np.zeros((20, 30, 40), bool)
    mask[2:7, 3:13, 5:25] = True  # 5 x 10 x 20 voxels
    extent_mm = np.array([5, 10, 20]) * spacing
    t, a = script.thickness(mask, spacing, si_axis)
    assert t == pytest.approx(extent_mm[si_axis])
    assert a == pytest.approx(np.prod(np.delete(extent_mm, si_axis)))
    with pytest.raises(ValueError, match="empty"):
        script.thickness(np.zeros_like(mask), spacing, si_axis)


def test_medians_over_lumbar_bodies_and_discs_only(script):
    t = np.zeros((60, 10, 10), np.int32)
    t[0:20, :5, :5] = 20  # L1: 20 mm thick (axis 0 is S-I here)
    t[20:26, :5, :5] = 120  # L1-L2 disc: 6 mm
    t[26:48, :5, :5] = 21  # L2: 22 mm
    t[48:60, :5, :5] = 9  # T2: not lumbar, ignored
    out = script.structure_medians(t, (1.0, 1.0, 1.0), 0)
    assert out["body"] == pytest.approx((21.0, 25.0)) and out["disc"] == pytest.approx((6.0, 25.0))
    assert script.structure_medians(np.zeros_like(t), (1.0, 1.0, 1.0), 0) == {"body": None, "disc": None}
    text = script.table({"phantom": {"body": [(20.0, 1000.0), (22.0, 1200.0)], "disc": [(9.0, 900.0)]}})
    assert "| phantom | 2 | 21.0 (20.5-21.5) | 1100 (1050-1150) | 9.0 (9.0-9.0) | 900 (900-900) |" in text


def test_prediction_rows_from_a_segment_output(script, tmp_path, capsys):
    from SpineSynthSegLib.io import Volume, write_volume

    t = np.zeros((10, 10, 60), np.uint8)  # RAS: axis 2 is S-I
    t[:5, :5, 0:20] = 21  # L2: 20 mm
    t[:5, :5, 20:28] = 120  # L1-L2 disc: 8 mm (the reference convention would be thinner)
    t[:5, :5, 28:50] = 20  # L1: 22 mm
    write_volume(Volume(t, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0])), tmp_path / "IVD_11_img_instances.nii.gz")
    rows = script.prediction_rows(tmp_path)
    assert list(rows) == ["prediction IVD"]
    assert rows["prediction IVD"]["disc"] == [pytest.approx((8.0, 25.0))]
    assert rows["prediction IVD"]["body"] == [pytest.approx((21.0, 25.0))]
    assert script.main(["--labelmaps", str(tmp_path / "none"), "--pred", str(tmp_path)]) == 1  # no manifest
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "manifest.json").write_text('{"maps": []}')
    assert script.main(["--labelmaps", str(tmp_path / "maps"), "--shared", str(tmp_path), "--pred", str(tmp_path / "maps")]) == 1
    assert "no <case>_img_instances" in capsys.readouterr().err
    assert script.main(["--labelmaps", str(tmp_path / "maps"), "--shared", str(tmp_path), "--pred", str(tmp_path)]) == 0
    assert "| prediction IVD | 1 | 21.0 (21.0-21.0) | 25 (25-25) | 8.0 (8.0-8.0) | 25 (25-25) |" in capsys.readouterr().out
