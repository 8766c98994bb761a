"""Metrics (against analytical cases, brute force and MONAI) and paired statistics."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from SpineSynthSegLib import case_scoring as S
from SpineSynthSegLib import metrics as M
from SpineSynthSegLib.statistics import compare_paired, describe, holm, paired_wilcoxon, rank_biserial

IPR = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # columns: axis 0 inferior, 1 posterior, 2 right


def _ball(shape, radius_mm, spacing):
    g = np.indices(shape).astype(float)
    return sum(((g[i] - (shape[i] - 1) / 2) * spacing[i]) ** 2 for i in range(3)) <= radius_mm**2


def _cube(shape, lo, side, shift=(0, 0, 0)):
    m = np.zeros(shape, bool)
    m[tuple(slice(lo + s, lo + s + side) for s in shift)] = True
    return m


def _brute(pred, ref, spacing, tol=1.0):
    """The module-doc definitions, literally (all pairwise distances)."""
    sp = [np.argwhere(M.surface_voxels(x)) * np.asarray(spacing) for x in (pred, ref)]
    d = np.sqrt(((sp[0][:, None, :] - sp[1][None, :, :]) ** 2).sum(-1))
    a, b = d.min(1), d.min(0)
    return {"hd": max(a.max(), b.max()), "hd95": max(np.percentile(a, 95), np.percentile(b, 95)),
            "assd": (a.sum() + b.sum()) / (a.size + b.size), "nsd": ((a <= tol).sum() + (b <= tol).sum()) / (a.size + b.size)}


# ----------------------------------------------------------------------------- analytical


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shifted_cubes_known_distances_and_spacing_order(axis):
    spacing, k = (0.8, 1.0, 2.5), 3
    shift = [0, 0, 0]
    shift[axis] = k
    ref, pred = _cube((20, 20, 20), 4, 8), _cube((20, 20, 20), 4, 8, tuple(shift))
    m = M.binary_metrics(pred, ref, spacing)
    assert m["dice"] == pytest.approx((8 - k) / 8) and m["iou"] == pytest.approx(5 / 11)
    assert m["hd"] == pytest.approx(k * spacing[axis])
    for key, value in _brute(pred, ref, spacing).items():
        assert m[key] == pytest.approx(value), key
    # Spacing is in array-axis order: the reversed tuple gives another answer along axes 0 and 2.
    other = M.hd(pred, ref, spacing[::-1])
    assert other == pytest.approx(k * spacing[::-1][axis])
    if axis != 1:
        assert other != pytest.approx(m["hd"])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0), (0.5, 0.5, 0.5)])
def test_concentric_spheres(spacing):
    shape = tuple(int(2 * 10 / s) + 1 for s in spacing)
    inner, outer = _ball(shape, 6.0, spacing), _ball(shape, 9.0, spacing)
    m = M.binary_metrics(inner, outer, spacing, tolerance_mm=3.5)
    voxel = max(spacing)
    for key in ("hd", "hd95"):
        assert abs(m[key] - 3.0) <= voxel, key
    assert abs(m["assd"] - 3.0) <= 0.5 * voxel
    assert m["dice"] == pytest.approx(2 * 6**3 / (6**3 + 9**3), abs=0.02)
    assert m["hd95"] <= m["hd"] and m["assd"] <= m["hd95"]
    assert M.binary_metrics(outer, outer, spacing)["hd"] == 0.0


def _blobs(seed, shape=(28, 24, 14)):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 2.5)
    return field > 0.02, ndimage.shift(field, (1.3, -0.7, 0.4), order=1) > 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_monai(seed):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    pred, ref = _blobs(seed)
    spacing = (0.9, 1.3, 3.0)
    m = M.binary_metrics(pred, ref, spacing, tolerance_mm=1.5)

    def t(x):
        return torch.from_numpy(x)[None, None].float()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"spacing": spacing, "include_background": True}
        monai = {
            "hd": compute_hausdorff_distance(t(pred), t(ref), **kw).item(),
            "hd95": compute_hausdorff_distance(t(pred), t(ref), percentile=95, **kw).item(),
            "assd": compute_average_surface_distance(t(pred), t(ref), symmetric=True, **kw).item(),
            "nsd": compute_surface_dice(t(pred), t(ref), [1.5], **kw).item(),
        }
    for key, value in monai.items():
        assert m[key] == pytest.approx(value, rel=1e-5, abs=1e-5), key
    assert M.hd95(pred, ref, spacing) == pytest.approx(monai["hd95"], rel=1e-5)
    assert M.assd(pred, ref, spacing) == pytest.approx(monai["assd"], rel=1e-5)
    assert M.normalized_surface_dice(pred, ref, spacing, 1.5) == pytest.approx(monai["nsd"], rel=1e-5)
    assert M.dice(pred, ref) == pytest.approx(m["dice"]) and M.iou(pred, ref) == pytest.approx(m["iou"])


def test_empty_masks_have_defined_values():
    empty, cube = np.zeros((8, 8, 8), bool), _cube((8, 8, 8), 2, 3)
    both = M.binary_metrics(empty, empty, 1.0)
    assert (both["dice"], both["iou"], both["hd"], both["hd95"], both["assd"], both["nsd"]) == (1, 1, 0, 0, 0, 1)
    assert both["pred_empty"] and both["ref_empty"]
    for pred, ref in ((empty, cube), (cube, empty)):
        m = M.binary_metrics(pred, ref, (1, 1, 2))
        assert m["dice"] == 0 and m["iou"] == 0 and m["nsd"] == 0
        assert all(math.isinf(m[k]) for k in ("hd", "hd95", "assd"))
        assert m["pred_empty"] == (pred is empty) and m["ref_empty"] == (ref is empty)
    assert M.binary_metrics(empty, cube, 1.0, empty_distance=99.0)["hd95"] == 99.0
    assert not any(isinstance(v, float) and math.isnan(v) for v in M.binary_metrics(empty, cube, 1.0).values())
    with pytest.raises(ValueError, match="shape"):
        M.dice(empty, np.zeros((8, 8, 9)))
    with pytest.raises(ValueError, match="spacing"):
        M.hd(cube, cube, (1.0, -1.0, 1.0))


def test_label_metrics_equal_binary_metrics():
    pred, ref = np.zeros((20, 12, 8), np.int32), np.zeros((20, 12, 8), np.int32)
    ref[2:8, 2:9, 1:6], ref[10:16, 2:9, 1:6] = 20, 21
    pred[3:8, 2:9, 1:6], pred[10:17, 3:9, 1:6], pred[18:20, 0:2, 0:2] = 20, 21, 22
    out = M.label_metrics(pred, ref, [20, 21, 22, 23], (1.0, 0.7, 2.0))
    for lab in (20, 21, 22, 23):
        assert out[lab] == M.binary_metrics(pred == lab, ref == lab, (1.0, 0.7, 2.0))


# ----------------------------------------------------------------------------- instances


def _row_of_blocks(ids, shape=(60, 8, 8)):
    """Blocks of 8 slices along axis 0 (gap 2), one per id (0 = skip)."""
    a = np.zeros(shape, np.int32)
    for k, i in enumerate(ids):
        a[2 + 10 * k : 10 + 10 * k, 2:6, 2:6] = i
    return a


def test_panoptic_missed_false_positive_and_split():
    ref = _row_of_blocks([20, 21, 22, 23])
    pred = ref.copy()
    pred[ref == 21] = 0  # missed: FN
    split = ref == 22  # 8 slices -> 5 + 3: IoU 0.625 (TP) and 0.375 (FP)
    pred[split] = 0
    pred[22:27, 2:6, 2:6], pred[27:30, 2:6, 2:6] = 22, 40
    pred[50:53, 2:6, 2:6] = 50  # a false positive
    q = M.match_instances(pred, ref).quality()
    assert (q["tp"], q["fp"], q["fn"]) == (3, 2, 1)
    assert q["rq"] == pytest.approx(3 / (3 + 2 / 2 + 1 / 2))
    assert q["sq"] == pytest.approx((1 + 0.625 + 1) / 3)
    assert q["pq"] == pytest.approx(q["rq"] * q["sq"])
    assert q["level_accuracy"] == 1.0


def test_panoptic_three_way_split_misses_and_ids_may_differ():
    ref = _row_of_blocks([20])
    pred = np.zeros_like(ref)
    pred[2:5, 2:6, 2:6], pred[5:8, 2:6, 2:6], pred[8:10, 2:6, 2:6] = 1, 2, 3  # all IoU < 0.5
    q = M.match_instances(pred, ref).quality()
    assert (q["tp"], q["fp"], q["fn"], q["rq"], q["sq"], q["pq"]) == (0, 3, 1, 0, 0, 0)
    q = M.match_instances(_row_of_blocks([21, 22]), _row_of_blocks([20, 21])).quality()
    assert q["tp"] == 2 and q["rq"] == 1 and q["level_accuracy"] == 0.0  # every level off by one
    half = np.zeros_like(ref)
    half[2:6, 2:6, 2:6], half[6:10, 2:6, 2:6] = 1, 2  # IoU exactly 0.5 twice: one match only
    q = M.match_instances(half, ref).quality()
    assert (q["tp"], q["fp"], q["fn"]) == (1, 1, 0)
    none = M.match_instances(np.zeros_like(ref), np.zeros_like(ref)).quality()
    assert (none["rq"], none["sq"], none["pq"], none["level_accuracy"]) == (1, 1, 1, None)


# ----------------------------------------------------------------------------- labelled span


def test_labelled_span_rule_and_span_weight():
    from SpineSynthSegLib.train_data import span_weight

    ref = np.zeros((80, 10, 10), np.int32)
    for k, lab in enumerate((20, 21, 22)):  # slices 15-24, 30-39, 45-54: centres 19.5, 34.5, 49.5
        ref[15 + 15 * k : 25 + 15 * k, 2:8, 2:8] = lab
    # 5 empty slices between consecutive bodies: widened by 2.5, floor(15 - 2.5), ceil(54 + 2.5)
    assert S.labelled_span(ref, 0) == (12, 57)
    mask = S.labelled_span_mask(ref, 0)
    assert np.array_equal(mask, span_weight(ref, si_axis=0) > 0)
    assert mask[12].all() and not mask[11].any() and mask[57].all() and not mask[58].any()
    # the gap is the space between structures, not the distance between their centres (15 here),
    # so the unlabelled body above (slices 0-9, centre 4.5) stays outside
    above = ref.copy()
    above[0:10, 2:8, 2:8] = 19
    pred = S.drop_outside_span(above, S.labelled_span(ref, 0), 0)[0]
    assert not (pred == 19).any() and np.array_equal(pred, ref)
    tilted = ref.copy()
    tilted[22:33, 2:3, 2:3] = 20  # extents that overlap along the axis: a gap of 0, not negative
    assert S.labelled_span(tilted, 0) == (13, 56)  # gaps 0 and 5: median 2.5, widened by 1.25
    assert S.labelled_span(np.zeros_like(ref), 0) is None and not S.labelled_span_mask(np.zeros_like(ref), 0).any()
    assert S.si_axis_of(IPR) == 0 and S.si_axis_of(np.eye(3)) == 2


def test_score_prediction_raw_and_span():
    ref = np.zeros((80, 10, 10), np.int32)
    for k, lab in enumerate((20, 21, 22)):
        ref[15 + 15 * k : 25 + 15 * k, 2:8, 2:8] = lab
    ref[26:29, 2:8, 2:8], ref[41:44, 2:8, 2:8] = 120, 121
    pred = ref.copy()
    # one empty slice between each body and disc: span floor(15 - 0.5) .. ceil(54 + 0.5)
    pred[0:6, 2:8, 2:8] = 19  # T12 above the span (centre 2.5 < 14): ignored in 'span'
    pred[66:76, 2:8, 2:8] = 23  # L4 below (centre 70.5 > 55): ignored
    pred[50:57, 8:10, 8:10] = 122  # beside L3, straddles the lower bound, centre 53 <= 55: kept
    from SpineSynthSegLib.labels import semantic_map

    res = S.score_prediction(semantic_map(pred), semantic_map(ref), (1.0, 1.0, 1.0), 0,
                             pred_instances=pred, ref_instances=ref)
    assert res["span_bounds"] == (14, 55)
    assert res["dropped"] == {"semantic": [1], "instances": [19, 23]}
    raw = {(r["kind"], r["structure"]): r for r in res["raw"]}
    span = {(r["kind"], r["structure"]): r for r in res["span"]}
    assert raw[("semantic", "vertebral_body")]["dice"] < 1 and span[("semantic", "vertebral_body")]["dice"] == 1
    assert span[("semantic", "disc")]["dice"] < 1  # the kept straddling disc counts
    assert raw[("instances", "vertebral_body")]["fp"] == 2 and span[("instances", "vertebral_body")]["fp"] == 0
    assert span[("instances", "vertebral_body")]["pq"] == 1.0 and span[("instances", "disc")]["fp"] == 1
    assert ("level", "T12") in raw and ("level", "T12") not in span and ("level", "L3-L4") in span and ("level", "L4") not in span
    assert raw[("level", "T12")]["ref_empty"] and math.isinf(raw[("level", "T12")]["hd"])
    assert span[("level", "L1")] == {**raw[("level", "L1")], "scope": "span"}


def test_score_prediction_semantic_only_scores_reference_classes():
    ref = np.zeros((60, 10, 10), np.uint8)
    ref[10:18, 2:8, 2:8] = ref[22:30, 2:8, 2:8] = 1  # bodies only: discs are not scored
    pred = ref.copy()
    pred[18:22, 2:8, 2:8] = 2
    res = S.score_prediction(pred, ref, (1.0, 1.0, 1.0), 0)
    assert {r["structure"] for r in res["raw"]} == {"vertebral_body"}
    inst = next(r for r in res["raw"] if r["kind"] == "instances")
    assert (inst["tp"], inst["fp"], inst["fn"], inst["level_accuracy"]) == (2, 0, 0, None)
    assert not any(r["kind"] == "level" for r in res["raw"])


# ----------------------------------------------------------------------------- statistics


def test_wilcoxon_matches_scipy_and_effect_size():
    rng = np.random.default_rng(3)
    a = rng.uniform(0.8, 0.95, 14)
    b = a - rng.normal(0.02, 0.02, 14)
    res = paired_wilcoxon(a, b)
    ref = stats.wilcoxon(a, b)
    assert res.p_value == pytest.approx(ref.pvalue) and res.statistic == pytest.approx(ref.statistic)
    d = a - b
    r = stats.rankdata(np.abs(d))
    assert res.effect_size == pytest.approx((r[d > 0].sum() - r[d < 0].sum()) / r.sum())
    assert res.n == res.n_nonzero == 14 and res.median_diff == pytest.approx(np.median(d))
    assert paired_wilcoxon(a + 1, a).effect_size == 1.0 and rank_biserial([-1, -2]) == -1.0
    greater = paired_wilcoxon(a, b, "greater")
    assert greater.p_value == pytest.approx(stats.wilcoxon(a, b, alternative="greater").pvalue)


def test_wilcoxon_degenerate_inputs():
    same = paired_wilcoxon([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert (same.p_value, same.effect_size, same.n_nonzero) == (1.0, 0.0, 0) and "zero" in same.note
    empty = paired_wilcoxon([], [])
    assert empty.p_value == 1.0 and empty.note == "no pairs"
    few = paired_wilcoxon([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    assert few.p_value == pytest.approx(0.25) and "cannot fall below 0.05" in few.note
    ties = paired_wilcoxon([1, 2, 3, 4, 5, 6, 7], [0, 1, 2, 3, 4, 5, 7])  # equal |d| and a zero
    assert ties.n_nonzero == 6 and 0 < ties.p_value < 0.05 and ties.effect_size == 1.0
    inf = paired_wilcoxon([1.0, 2.0, math.inf, math.inf, math.nan], [2.0, 3.0, 1.0, math.inf, 1.0])
    assert (inf.n, inf.n_nonzero, inf.n_dropped) == (4, 3, 1) and math.isfinite(inf.p_value)
    with pytest.raises(ValueError, match="length"):
        paired_wilcoxon([1, 2], [1])


def test_compare_paired_groups_holm_describe():
    a = {f"c{i}": 0.9 + 0.01 * i for i in range(8)}
    b = {f"c{i}": 0.85 + 0.005 * i for i in range(8)} | {"extra": 0.1}
    groups = {f"c{i}": "T1" if i < 4 else "T2" for i in range(8)}
    out = compare_paired(a, b, groups)
    assert set(out) == {"all", "T1", "T2"} and out["all"].n == 8 and out["T1"].n == 4 and out["all"].effect_size == 1
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    d = describe([1.0, 2.0, 3.0, math.inf, None])
    assert d["n"] == 4 and d["n_inf"] == 1 and d["mean"] == 2.0 and d["median"] == 2.0
    assert describe([math.inf])["mean"] is None
