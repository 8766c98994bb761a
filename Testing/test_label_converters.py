"""Tests of the label converters (synthetic arrays and the real samples in ../shared/data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineSynthSegLib import io
from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.label_converters import (
    INSTANCE_CONVENTIONS,
    convert_instances,
    from_reference,
    from_reference_case,
    from_spider,
    from_totalsegmentator,
    from_tptbox_subregions,
    from_verse,
    spider_semantic,
)
from SpineSynthSegLib.labels import SEMANTIC_IDS, vertebra_id


def _arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.uint16).reshape(1, 1, -1)


def _flat(a: np.ndarray) -> list[int]:
    return a.ravel().tolist()


# ----------------------------------------------------------------------------- synthetic


def test_verse_keeps_vertebrae_discs_and_merges_endplates():
    out = from_verse(_arr(0, 5, 20, 28, 26, 105, 123, 205, 224))
    assert out.dtype == np.int32 and out.shape == (1, 1, 9)
    assert _flat(out) == [0, 5, 20, 28, 26, 105, 123, 5, 24]
    assert _flat(from_verse(_arr(205, 7), endplates="drop")) == [0, 7]


def test_verse_unknown_labels_raise_or_drop():
    with pytest.raises(InputError, match=r"\[27, 126\]"):
        from_verse(_arr(20, 27, 126))
    assert _flat(from_verse(_arr(20, 27, 126), drop_unknown=True)) == [20, 0, 0]
    with pytest.raises(ValueError, match="endplates"):
        from_verse(_arr(1), endplates="keep")


def test_verse_accepts_float_integer_maps_and_rejects_fractions():
    assert _flat(from_verse(np.array([[[0.0, 16.0]]]))) == [0, 16]
    with pytest.raises(InputError, match="non-integer"):
        from_verse(np.array([[[0.5, 16.0]]]))


def test_tptbox_subregions_to_semantic():
    out = from_tptbox_subregions(_arr(0, 41, 48, 49, 50, 62, 100, 61, 60))
    s = SEMANTIC_IDS
    body, post = s["vertebral_body"], s["posterior_elements"]
    assert _flat(out) == [0, post, post, body, body, body, s["disc"], s["spinal_canal"], s["spinal_cord"]]
    with pytest.raises(InputError, match="63"):
        from_tptbox_subregions(_arr(41, 63))


def test_spider_default_lowest_l5():
    out = from_spider(_arr(0, 1, 2, 5, 100, 101, 201, 202, 205))
    assert _flat(out) == [0, 24, 23, 20, 0, 24, 124, 123, 120]
    assert _flat(from_spider(_arr(101, 3), partial="drop")) == [0, 22]


def test_spider_other_lowest_vertebra():
    assert _flat(from_spider(_arr(1, 2, 201), lowest_vertebra="L6")) == [25, 24, 125]
    assert _flat(from_spider(_arr(1, 2), lowest_vertebra="S1")) == [26, 24]
    with pytest.raises(InputError, match="201"):  # no disc below the sacrum
        from_spider(_arr(1, 201), lowest_vertebra="S1")
    with pytest.raises(InputError, match="25"):  # 25 vertebrae above L5 would pass C1
        from_spider(_arr(25))
    with pytest.raises(InputError, match="300"):
        from_spider(_arr(300))


def test_spider_semantic():
    s = SEMANTIC_IDS
    assert _flat(spider_semantic(_arr(0, 3, 103, 203, 100))) == [0, 1, 1, s["disc"], s["spinal_canal"]]


def test_totalsegmentator_total():
    codes = [0, 25, 26, 27, 31, 32, 43, 44, 50, 79, 5]
    assert _flat(from_totalsegmentator(_arr(*codes))) == [0, 0, 26, 24, 20, 19, 8, 7, 1, 0, 0]
    assert _flat(from_totalsegmentator(_arr(25), sacrum_as_s1=True)) == [26]
    with pytest.raises(InputError, match="118"):
        from_totalsegmentator(_arr(26, 118))
    with pytest.raises(ValueError, match="task"):
        from_totalsegmentator(_arr(1), task="nope")


def test_totalsegmentator_semantic_and_mr_tasks():
    s = SEMANTIC_IDS
    assert _flat(from_totalsegmentator(_arr(0, 1, 2), task="vertebrae_body")) == [0, 1, s["disc"]]
    mr = from_totalsegmentator(_arr(5, 18, 19, 20, 21), task="total_mr")
    assert _flat(mr) == [0, 0, 1, s["disc"], s["spinal_cord"]]
    assert _flat(from_totalsegmentator(_arr(1, 2, 6, 7, 25), task="vertebrae_mr")) == [26, 24, 20, 19, 1]
    with pytest.raises(InputError, match="3"):
        from_totalsegmentator(_arr(3), task="vertebrae_body")


def test_reference_vertebrae_and_discs():
    arr = _arr(0, 7, 4, 6, 3, 5, 2, 1)
    out = from_reference(arr, [7, 4, 6, 3, 5, 2, 1], "vertebra")  # VB2-like: T11..L5
    assert _flat(out) == [0, 18, 19, 20, 21, 22, 23, 24]
    assert _flat(from_reference(_arr(1, 5), [1, 2, 3, 4, 5], "vertebra")) == [20, 24]
    assert _flat(from_reference(_arr(1, 5), [5, 4, 3, 2, 1], "disc")) == [124, 120]
    assert _flat(from_reference(_arr(1, 2), [1, 2], "vertebra", top="T12")) == [19, 20]
    assert _flat(from_reference(_arr(1, 2), [1, 2], "vertebra", top="L5", lowest="S1")) == [24, 26]


def test_reference_errors():
    with pytest.raises(InputError, match="spans"):
        from_reference(_arr(1), [1, 2, 3], "vertebra", top="L1", lowest="L5")
    with pytest.raises(InputError, match="do not fit"):
        from_reference(_arr(1), list(range(1, 30)), "vertebra")
    with pytest.raises(InputError, match="do not fit"):
        from_reference(_arr(1), [1, 2], "disc", top="L5")  # second disc would be below S1
    with pytest.raises(InputError, match="distinct"):
        from_reference(_arr(1), [1, 1], "vertebra")
    with pytest.raises(InputError, match=r"\[9\]"):
        from_reference(_arr(1, 9), [1, 2], "vertebra")
    assert _flat(from_reference(_arr(1, 9), [1, 2], "vertebra", drop_unknown=True)) == [23, 0]
    with pytest.raises(InputError, match="T13"):
        from_reference(_arr(1), [1], "vertebra", lowest="T13")
    with pytest.raises(ValueError, match="kind"):
        from_reference(_arr(1), [1], "body")


def test_reference_case_prefixes():
    cases = {"VB3_99": {"labels_superior_to_inferior": [1, 2, 3, 4, 5]}}
    assert _flat(from_reference_case(_arr(1, 5), "VB3_99", cases)) == [20, 24]
    with pytest.raises(InputError, match="not found"):
        from_reference_case(_arr(1), "VB3_01", cases)
    with pytest.raises(InputError, match="prefix"):
        from_reference_case(_arr(1), "XYZ_01", cases)


# ----------------------------------------------------------------------------- real samples


def _centroid_si(vol: io.Volume, mask: np.ndarray) -> float:
    """World superior coordinate (mm; LPS z) of a mask's centroid."""
    idx = np.argwhere(mask).mean(axis=0)
    return float((vol.affine @ np.append(idx, 1.0))[2])


def test_real_tptbox_samples(shared_data):
    folder = shared_data / "samples" / "tptbox_samples"
    mri = io.read_labels(folder / "sub-mri_seg-vert_label-6_msk.nii.gz")
    out = from_verse(mri.array)
    assert set(np.unique(out).tolist()) == {0, 5, 6, 7, 105, 106}
    assert (out[mri.array == 206] == 6).all()
    ct = from_verse(io.read_labels(folder / "sub-ct_seg-vert_label-22_msk.nii.gz").array)
    assert set(np.unique(ct).tolist()) == {0, 21, 22, 23}
    for name in ("sub-mri_seg-subreg_label-6_msk.nii.gz", "sub-ct_seg-subreg_label-22_msk.nii.gz"):
        sem = from_tptbox_subregions(io.read_labels(folder / name).array)
        assert {1, 3} <= set(np.unique(sem).tolist()) <= set(range(6))
    sem = from_tptbox_subregions(io.read_labels(folder / "sub-mri_seg-subreg_label-6_msk.nii.gz").array)
    assert {2, 4, 5} <= set(np.unique(sem).tolist())


def test_real_verse_mask(shared_data):
    vol = io.read_labels(shared_data / "samples" / "verse_sub-verse004_mask" / "sub-verse004_seg-vert_msk.nii.gz")
    out = from_verse(vol.array)
    assert set(np.unique(out).tolist()) == {0, *range(16, 25)}
    assert _centroid_si(vol, out == vertebra_id("T9")) > _centroid_si(vol, out == vertebra_id("L5"))


def test_real_totalsegmentator(shared_data):
    folder = shared_data / "samples" / "totalsegmentator_tests"
    vol = io.read_labels(folder / "spine_report_totalseg.nii.gz")
    out = from_totalsegmentator(vol.array)
    assert set(np.unique(out).tolist()) == {0, *range(18, 25), 26}  # T11..L5, S1 (no L6)
    assert _centroid_si(vol, out == vertebra_id("L1")) > _centroid_si(vol, out == vertebra_id("L5"))
    # the tool's own refined map uses the output numbering: our conversion must agree with it
    refined = io.read_labels(folder / "spine_report_totalseg_vertebrae_pp_refined.nii.gz").array
    for vid in range(20, 25):
        overlap = (refined == vid) & (out == vid)
        assert overlap.sum() > 0.5 * (refined == vid).sum()
    body = from_totalsegmentator(
        io.read_labels(folder / "spine_report_totalseg_vertebrae_body.nii.gz").array, task="vertebrae_body"
    )
    assert set(np.unique(body).tolist()) == {0, 1, 2}
    mr = from_totalsegmentator(io.read_labels(folder / "example_seg_mr.nii.gz").array, task="total_mr")
    assert {1, 2, 5} <= set(np.unique(mr).tolist()) <= {0, 1, 2, 5}


def test_real_reference_cases(shared_data):
    root = shared_data / "lumbar_mri"
    cases = json.loads((root / "cases.json").read_text())
    expected = {"VB3_02": set(range(20, 25)), "VB2_05": set(range(18, 25)), "IVD_11": set(range(120, 125))}
    for case, ids in expected.items():
        vol = io.read_labels(root / "labels" / f"{case}_seg.nii.gz")
        out = from_reference_case(vol.array, case, cases)
        assert set(np.unique(out).tolist()) == {0} | ids
        top, bottom = min(ids), max(ids)
        assert _centroid_si(vol, out == top) > _centroid_si(vol, out == bottom)  # superior first


def test_conventions_by_name_take_either_spelling_and_name_the_source():
    arr = np.zeros((4, 4, 4), np.int16)
    arr[0], arr[1], arr[2], arr[3, 0] = 20, 120, 21, 27  # L1, L1-L2 disc, L2, a VerSe coccyx voxel
    verse = convert_instances(arr, "VerSe", "a.nii.gz")
    assert set(np.unique(verse).tolist()) == {0, 20, 21, 120}  # the coccyx is not a level: dropped
    with pytest.raises(InputError, match=r"a.nii.gz: .*27.*convention 'spineps' right"):
        convert_instances(arr, "spineps", "a.nii.gz")  # SPINEPS has no 27: an unknown label
    mr = np.zeros((2, 2, 2), np.int16)
    mr[0], mr[1] = 6, 2  # 'vertebrae_mr': 6 is L1, 2 is L5
    for name in ("totalsegmentator_mr", "totalsegmentator-mr", "TotalSegmentator-MR"):
        assert set(np.unique(convert_instances(mr, name)).tolist()) == {20, 24}
    assert INSTANCE_CONVENTIONS[-1] == "totalsegmentator_mr"
    with pytest.raises(InputError, match=r"b.nii.gz: unknown label convention 'nnunet'; use one of spineps"):
        convert_instances(arr, "nnunet", "b.nii.gz")
