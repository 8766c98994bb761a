"""endplate_gap: the disc voxels against a body become an unlabelled endplate layer."""

import json

import numpy as np
import pytest

from SpineSynthSegLib import training_data as td
from SpineSynthSegLib.endplate_gap import endplate_gap
from SpineSynthSegLib.io import Volume, read_labels
from SpineSynthSegLib.labels import LabelEntry, LabelTable, sidecar_path

TABLE = LabelTable((LabelEntry(0, "background", "fat", 0), LabelEntry(1, "L3 marrow", "marrow", 22),
                    LabelEntry(2, "L3/L4 nucleus", "nucleus", 122), LabelEntry(3, "L4 marrow", "marrow", 23)))


def _stack(spacing=(2.0, 1.5, 1.5)) -> Volume:
    """RAS column along S-I (axis 2): L4 body z 0-5, disc z 6-11, L3 body z 12-17; a disc-only patch apart."""
    a = np.zeros((8, 10, 18), np.uint8)
    a[2:6, 2:8, 0:6] = 3
    a[2:6, 2:8, 6:12] = 2
    a[2:6, 2:8, 12:18] = 1
    return Volume(a, spacing, (0.0, 0.0, 0.0), np.eye(3))


def test_one_voxel_layer_against_each_body_at_1_5_mm():
    vol, table = endplate_gap(_stack(), TABLE, 1.5)
    new = table.entries[-1]
    assert (new.id, new.tissue, new.target) == (4, "endplate", 0)
    column = vol.array[3, 4]
    assert column.tolist() == [3] * 6 + [4] + [2] * 4 + [4] + [1] * 6  # disc 6 -> 4 voxels thick
    # bodies and background untouched; only disc voxels moved
    before = _stack().array
    assert np.array_equal(vol.array[vol.array != 4], before[vol.array != 4])
    assert set(np.unique(before[vol.array == 4])) == {2}
    # 3 mm: two voxels each side
    thick, _ = endplate_gap(_stack(), TABLE, 3.0)
    assert (thick.array[3, 4] == 2).sum() == 2


def test_distance_is_in_mm_not_voxels():
    # at 3 mm S-I spacing a 1.5 mm layer reaches no disc voxel centre: nothing changes
    vol = _stack(spacing=(2.0, 1.5, 3.0))
    out, table = endplate_gap(vol, TABLE, 1.5)
    assert out is vol and table is TABLE


@pytest.mark.parametrize("remove", [(2,), (1, 3)], ids=["bodies only", "discs only"])
def test_maps_without_both_classes_or_zero_layer_are_unchanged(remove):
    vol = _stack()
    partial = vol.with_array(np.where(np.isin(vol.array, remove), 0, vol.array).astype(np.uint8))
    out, table = endplate_gap(partial, TABLE, 1.5)
    assert out is partial and table is TABLE
    out, table = endplate_gap(vol, TABLE, 0.0)
    assert out is vol and table is TABLE
    with pytest.raises(ValueError, match="layer_mm"):
        endplate_gap(vol, TABLE, float("nan"))


def test_prepare_phantom_with_endplate_layer(tmp_path):
    plain = td.prepare_labelmaps(tmp_path, tmp_path / "plain", td.PrepareConfig(sources=("phantom",), n_phantoms=1))
    gap = td.prepare_labelmaps(tmp_path, tmp_path / "gap", td.PrepareConfig(sources=("phantom",), n_phantoms=1, disc_endplate_mm=1.5))
    assert gap[0]["targets"] == plain[0]["targets"] and gap[0]["has_disc"]
    assert json.loads((tmp_path / "gap" / "manifest.json").read_text())["disc_endplate_mm"] == 1.5

    def disc_voxels(folder, entry):
        vol = read_labels(folder / entry["path"])
        table = LabelTable.load(sidecar_path(folder / entry["path"]))
        return int((table.target_map(vol.array) >= 100).sum()), table.entries[-1]

    n_plain, _ = disc_voxels(tmp_path / "plain", plain[0])
    n_gap, last = disc_voxels(tmp_path / "gap", gap[0])
    assert 0.5 * n_plain < n_gap < 0.9 * n_plain  # one voxel off each endplate of ~6-voxel discs
    assert last.tissue == "endplate" and last.target == 0
    with pytest.raises(ValueError, match="disc_endplate_mm"):
        td.PrepareConfig(disc_endplate_mm=-1.0)
