"""Tests of level assignment from semantic maps (SpineSynthSegLib.instances)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from SpineSynthSegLib.body_split import split_at_discs
from SpineSynthSegLib.instances import TRANSITIONAL, InstanceConfig, assign_levels
from SpineSynthSegLib.io import Volume, reorient
from SpineSynthSegLib.labels import DISC_OFFSET

RAS_DIRECTION = np.diag([-1.0, -1.0, 1.0])  # LPS cosines of array axes pointing R, A, S


def _spine(n_lumbar: int = 5, sacrum: bool = True, spacing=(1.5, 1.5, 1.5), room_mm: float = 30.0):
    """A semantic lumbar column on a RAS grid and its expected instance ids.

    Bodies are elliptic cylinders (height 24 mm, depth 32, width 42) whose axes tilt in the
    sagittal plane from -10 deg (L1) by 5 deg per level (a lordosis); discs (9 mm) fill the wedge
    between adjacent endplates. The sacrum-like last body is larger (30 x 40 x 48 mm) and tilted
    22 deg more than the body above it.

    Returns:
        ``(volume, expected, centres)``: uint8 semantic Volume (RAS, world origin at the grid
        corner), the expected instance array, and each body's centre in RAS mm.
    """
    ids = list(range(20, 20 + n_lumbar)) + ([26] if sacrum else [])
    shapes = [(24.0, 16.0, 21.0)] * n_lumbar + ([(30.0, 20.0, 24.0)] if sacrum else [])
    thetas = [math.radians(-10.0 + 5.0 * k) for k in range(n_lumbar)]
    if sacrum:
        thetas.append(thetas[-1] + math.radians(22.0))
    axis = [np.array([0.0, math.sin(t), math.cos(t)]) for t in thetas]
    centres = [np.zeros(3)]
    for k in range(len(ids) - 1):
        disc = 12.0 if ids[k + 1] == 26 else 9.0
        nd = (axis[k] + axis[k + 1]) / np.linalg.norm(axis[k] + axis[k + 1])
        top_next = centres[k] - axis[k] * shapes[k][0] / 2 - nd * disc
        centres.append(top_next - axis[k + 1] * shapes[k + 1][0] / 2)
    c = np.array(centres)
    lo = c.min(axis=0) - [35.0, 40.0, 0.0]
    hi = c.max(axis=0) + [35.0, 40.0, 0.0]
    lo[2], hi[2] = c[-1, 2] - shapes[-1][0] - room_mm, c[0, 2] + shapes[0][0] / 2 + room_mm
    sp = np.asarray(spacing)
    shape = tuple(int(n) for n in np.ceil((hi - lo) / sp))
    grid = np.stack(np.meshgrid(*[lo[a] + sp[a] * np.arange(shape[a]) for a in range(3)], indexing="ij"), axis=-1)
    sem, expected = np.zeros(shape, np.uint8), np.zeros(shape, np.int16)

    def local(centre, n):
        d = grid - centre
        ap = np.array([0.0, n[2], -n[1]])
        return d @ n, d @ ap, d[..., 0]

    for k in range(len(ids) - 1):  # discs first: the wedge between the endplates
        upper_plane = centres[k] - axis[k] * shapes[k][0] / 2
        lower_plane = centres[k + 1] + axis[k + 1] * shapes[k + 1][0] / 2
        nd = (axis[k] + axis[k + 1]) / np.linalg.norm(axis[k] + axis[k + 1])
        _, a, l = local((upper_plane + lower_plane) / 2, nd)
        ra, rl = 0.95 * min(shapes[k][1], shapes[k + 1][1]), 0.95 * min(shapes[k][2], shapes[k + 1][2])
        inside = ((grid - upper_plane) @ axis[k] < 0) & ((grid - lower_plane) @ axis[k + 1] > 0)
        inside &= (a / ra) ** 2 + (l / rl) ** 2 <= 1
        sem[inside], expected[inside] = 2, DISC_OFFSET + ids[k]
    for k, v in enumerate(ids):
        h, a, l = local(centres[k], axis[k])
        inside = (np.abs(h) <= shapes[k][0] / 2) & ((a / shapes[k][1]) ** 2 + (l / shapes[k][2]) ** 2 <= 1)
        sem[inside], expected[inside] = 1, v
    origin = RAS_DIRECTION @ lo  # world LPS of voxel (0, 0, 0)
    return Volume(sem, tuple(sp), tuple(origin), RAS_DIRECTION.copy()), expected, c


def _agreement(out: np.ndarray, expected: np.ndarray) -> float:
    fg = expected > 0
    return float((out[fg] == expected[fg]).mean())


def _majority(out: np.ndarray, expected: np.ndarray) -> dict[int, int]:
    return {int(v): int(np.bincount(out[expected == v].astype(np.int64)).argmax()) for v in np.unique(expected) if v}


def test_five_lumbar_and_sacrum():
    vol, expected, centres = _spine(5)
    out, report = assign_levels(vol)
    assert out.array.dtype in (np.int16, np.int32)
    assert _agreement(out.array, expected) == 1.0
    assert sorted(np.unique(out.array).tolist()) == [0, 20, 21, 22, 23, 24, 26, 120, 121, 122, 123, 124]
    assert report["anchor"] == "sacrum" and report["confidence"] >= 0.8
    assert not [w for w in report["warnings"] if TRANSITIONAL in w]
    names = [i["name"] for i in report["instances"]]
    assert names == ["L1", "L1-L2", "L2", "L2-L3", "L3", "L3-L4", "L4", "L4-L5", "L5", "L5-S1", "S1"]
    json.dumps(report)
    l3 = next(i for i in report["instances"] if i["name"] == "L3")
    assert np.allclose(l3["centroid_mm"], RAS_DIRECTION @ centres[2], atol=1.0)  # LPS world
    assert l3["volume_mm3"] == pytest.approx(l3["n_voxels"] * 1.5**3)
    assert l3["volume_mm3"] == pytest.approx(math.pi * 16 * 21 * 24, rel=0.05)


def test_six_lumbar_is_counted_as_t12_with_a_warning_unless_told():
    vol, expected, _ = _spine(6)
    out, report = assign_levels(vol)
    got = _majority(out.array, expected)
    assert [got[v] for v in range(20, 27)] == [19, 20, 21, 22, 23, 24, 26]  # L6 never inferred
    assert any(TRANSITIONAL in w and "6 mobile" in w for w in report["warnings"])
    out6, report6 = assign_levels(vol, n_lumbar=6)
    assert _agreement(out6.array, expected) == 1.0
    assert 25 in out6.array and 125 in out6.array
    assert not [w for w in report6["warnings"] if TRANSITIONAL in w]


def test_four_lumbar_warns():
    vol, expected, _ = _spine(4)
    out, report = assign_levels(vol)
    got = _majority(out.array, expected)
    assert [got[v] for v in (20, 21, 22, 23, 26)] == [21, 22, 23, 24, 26]  # counted up from S1
    assert any(TRANSITIONAL in w and "4 mobile" in w for w in report["warnings"])
    assert report["confidence"] < 0.8


def test_cropped_field_of_view_without_sacrum():
    vol, expected, centres = _spine(5)
    cut = round(float(centres[2, 2] - (RAS_DIRECTION @ np.asarray(vol.origin))[2]) / vol.spacing[2])
    # field of view from the middle of L3 up: L3 is cut by the inferior border
    small = Volume(vol.array[:, :, cut:].copy(), vol.spacing, tuple(vol.affine[:3, :3] @ [0, 0, cut] + vol.origin),
                   vol.direction)
    out, report = assign_levels(small)
    assert report["anchor"] == "top"
    assert report["confidence"] < 0.5
    assert any("only 3 bodies" in w for w in report["warnings"])
    assert any("lumbosacral junction not visible" in w for w in report["warnings"])
    assert _agreement(out.array, expected[:, :, cut:]) == 1.0  # counted from L1 at the top


NO_SHAPE_CUE = InstanceConfig(depth_ratio=(5.0, 6.0), volume_ratio=(5.0, 6.0), fragment_ratio=(0.01, 0.02),
                              tilt_deg=(80.0, 89.0))


def test_top_count_ending_on_s1_without_a_disc_below_keeps_s1():
    """Six bodies, the image ending just under the lowest, no disc below it and no sacral shape cue:
    counted from L1 the column ends exactly on S1, and nothing contradicts S1 (an L5 would show its
    L5-S1 disc)."""
    vol, expected, _ = _spine(5, room_mm=-10.0)  # 5 mm of image below S1
    out, report = assign_levels(vol, config=NO_SHAPE_CUE)
    assert report["anchor"] == "top", report["sacrum_features"]
    assert report["sacrum_features"]["no_disc_below"] == 0.5
    assert any("reach S1" in w for w in report["warnings"])
    got = _majority(out.array, expected)
    assert [got[v] for v in (20, 21, 22, 23, 24, 26)] == [20, 21, 22, 23, 24, 26]


def test_top_count_past_s1_without_a_disc_below_counts_up_from_s1():
    """Seven bodies (six mobile, as T12-L5) above an S1 without shape cue or disc below it."""
    vol, expected, _ = _spine(6, room_mm=-10.0)
    out, report = assign_levels(vol, config=NO_SHAPE_CUE)
    assert report["anchor"] == "top", report["sacrum_features"]
    assert any("reach S1" in w and "counted up from it" in w for w in report["warnings"])
    got = _majority(out.array, expected)
    assert [got[v] for v in (20, 21, 22, 23, 24, 25, 26)] == [19, 20, 21, 22, 23, 24, 26]


def test_top_count_past_l5_with_a_disc_below_counts_up_from_l5():
    """Six mobile bodies and the disc under the lowest at the image border: the lowest is L5."""
    vol, expected, _ = _spine(6, room_mm=3.0)
    sem = np.where(expected == 26, 0, vol.array).astype(np.uint8)
    disc = np.argwhere(expected == 125)
    cut = int(disc[:, 2].min()) + 2  # the field of view ends inside the disc below the lowest body
    cropped = Volume(sem[:, :, cut:].copy(), vol.spacing, tuple(vol.affine[:3, :3] @ [0, 0, cut] + vol.origin),
                     vol.direction)
    out, report = assign_levels(cropped, config=NO_SHAPE_CUE)
    assert report["anchor"] == "top" and report["sacrum_features"]["no_disc_below"] == 0.0
    assert any("counted up from L5" in w for w in report["warnings"])
    got = _majority(out.array, np.where(cropped.array == 1, expected[:, :, cut:], 0))
    assert [got[v] for v in range(20, 26)] == [19, 20, 21, 22, 23, 24]


def test_lowest_disc_without_sacrum_anchors_l5():
    vol, expected, _ = _spine(5)
    sem = vol.array.copy()
    sem[expected == 26] = 0  # S1 not segmented; the L5-S1 disc is
    out, report = assign_levels(vol.with_array(sem))
    assert report["anchor"] == "l5"
    assert _agreement(out.array, np.where(expected == 26, 0, expected)) == 1.0


def _keep_part_of_s1(sem: np.ndarray, expected: np.ndarray, keep: float) -> np.ndarray:
    """S1 cut down to its upper ``keep`` fraction of voxels (networks often segment only that)."""
    idx = np.argwhere(expected == 26)
    order = idx[np.argsort(-idx[:, 2])]  # superior first
    sem = sem.copy()
    drop = order[int(keep * len(order)):]
    sem[tuple(drop.T)] = 0
    return sem


def _s1_fragment_and_remnant(vol: Volume, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The upper quarter of S1 with a thin S1-S2 remnant disc (radius 9 mm, 3 mm: ~7 % of a lumbar
    disc) 2 voxels below it: (semantic array, S1 fragment voxels, index k of the remnant's bottom)."""
    sem = _keep_part_of_s1(vol.array, expected, 0.25)
    s1 = np.argwhere((sem == 1) & (expected == 26))
    centre = s1.mean(axis=0)
    i, j, k = np.indices(sem.shape)
    below = s1[:, 2].min() - 3
    remnant = ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= 6**2) & (k >= below - 1) & (k <= below)
    sem[remnant & (sem == 0)] = 2
    return sem, s1, below - 1


def test_s1_fragment_with_a_remnant_disc_below_is_still_s1():
    vol, expected, _centres = _spine(5)
    sem, s1, _ = _s1_fragment_and_remnant(vol, expected)
    lowest = s1[s1[:, 2] == s1[:, 2].min()]
    out, report = assign_levels(vol.with_array(sem))
    assert report["anchor"] == "sacrum", report
    assert DISC_OFFSET + 26 not in out.array  # the remnant has no id in the convention
    assert any("S1-S2 remnant" in w for w in report["warnings"])
    got = _majority(out.array, np.where(sem > 0, expected, 0))
    assert [got[v] for v in (20, 21, 22, 23, 24, 26)] == [20, 21, 22, 23, 24, 26]
    # a full-size disc below the fragment is the L5-S1 disc: the fragment is then L5
    big = sem.copy()
    for dz in range(2, 8):
        big[tuple((lowest - [0, 0, dz]).T)] = 2
    _, report_big = assign_levels(vol.with_array(big), config=InstanceConfig(remnant_disc_ratio=0.9))
    assert report_big["anchor"] != "sacrum"


@pytest.mark.parametrize("radius, joins", [(7, True), (16, False)])
def test_sacral_piece_below_s1_joins_it_unless_body_sized(radius, joins):
    vol, expected, _centres = _spine(5)
    sem, s1, bottom = _s1_fragment_and_remnant(vol, expected)
    centre = s1.mean(axis=0)
    i, j, k = np.indices(sem.shape)
    piece = ((i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= radius**2) & (k >= bottom - 9) & (k <= bottom - 2)
    sem[piece & (sem == 0)] = 1  # S2 below the remnant: small, or as large as a lumbar body
    out, report = assign_levels(vol.with_array(sem))
    l5 = _majority(out.array, np.where(sem == 1, expected, 0))[24]
    if joins:
        assert report["anchor"] == "sacrum" and l5 == 24
        assert set(np.unique(out.array[piece & (sem == 1)])) == {26}
        assert any("joined it" in w for w in report["warnings"])
    else:  # a body-sized piece is not taken for a sacral segment: it stays an instance of its own
        assert not any("joined it" in w for w in report["warnings"])
        fragment_ids = set(np.unique(out.array[tuple(s1.T)]))
        assert fragment_ids.isdisjoint(np.unique(out.array[piece & (sem == 1)]))


def test_bridge_between_bodies_is_split():
    vol, expected, _ = _spine(5)
    sem = vol.array.copy()
    ii, jj, _ = np.nonzero(expected == 121)  # a 3 x 3 mm bridge of "body" through the L2-L3 disc
    i0, j0 = int(np.median(ii)), int(np.median(jj))
    zs = np.nonzero(expected[i0, j0, :] == 121)[0]
    box = (slice(i0, i0 + 2), slice(j0, j0 + 2), slice(zs.min() - 1, zs.max() + 2))
    sem[box][np.isin(expected[box], (0, 121))] = 1
    out, report = assign_levels(vol.with_array(sem))
    assert report["split_bodies"] == 1
    assert _majority(out.array, expected) == _majority(expected, expected)
    bodies = expected < 100
    assert (out.array[bodies] == expected[bodies]).mean() == 1.0


def test_bodies_merged_around_a_partly_segmented_disc_are_cut_at_the_disc():
    vol, expected, _ = _spine(5)
    sem = vol.array.copy()
    disc = expected == 123  # L4-L5: its outer 4 mm become "body", joining L4 and L5 in one component
    core = ndimage.binary_erosion(disc, iterations=3)
    sem[disc & ~core] = 1
    _, n = ndimage.label(sem == 1)
    assert n == 5  # L1, L2, L3, L4+L5, sacrum
    out, report = assign_levels(vol.with_array(sem))
    assert report["split_bodies"] == 1 and report["anchor"] == "sacrum"
    got, want = _majority(out.array, expected), _majority(expected, expected)
    assert {k: v for k, v in got.items() if k != 123} == {k: v for k, v in want.items() if k != 123}
    assert (out.array[core] == 123).all()  # the disc left inside keeps the id of the body above
    bodies = (expected > 0) & (expected < 100)
    assert (out.array[bodies] == expected[bodies]).mean() > 0.99


def test_bodies_next_to_their_discs_are_not_cut():
    vol, _, _ = _spine(5)  # the sacrum is 1.8 x the median body and lies under the L5-S1 disc
    _, report = assign_levels(vol)
    assert report["split_bodies"] == 0
    labels, _ = ndimage.label(vol.array == 1)
    discs, _ = ndimage.label(vol.array == 2)
    cut, n = split_at_discs(labels, discs, np.asarray(vol.spacing), 300.0, merged_ratio=1.0, side_ratio=0.1)
    assert n == 0 and (cut == labels).all()  # even with loose thresholds no body straddles a disc plane


def test_missing_body_leaves_a_gap():
    vol, expected, _ = _spine(5)
    sem = vol.array.copy()
    sem[expected == 22] = 0  # L3 not segmented
    out, report = assign_levels(vol.with_array(sem))
    assert report["missing_levels"] == ["L3"]
    keep = expected != 22
    assert (out.array[keep] == expected[keep]).all()  # discs L2-L3 = 121, L3-L4 = 122
    assert not [w for w in report["warnings"] if "right above S1" in w]


def test_missing_body_right_above_the_sacrum_is_ambiguous():
    vol, expected, _ = _spine(5)
    _, full = assign_levels(vol)
    sem = vol.array.copy()
    sem[expected == 24] = 0  # L5 not segmented, or S1 missed and this 'S1' is S2: the map cannot tell
    out, report = assign_levels(vol.with_array(sem))
    assert report["anchor"] == "sacrum" and report["missing_levels"] == ["L5"]
    keep = expected != 24
    assert (out.array[keep] == expected[keep]).all()  # the labels stay: only the warning and confidence
    assert [w for w in report["warnings"] if "missing right above S1: L5 not segmented" in w]
    assert report["confidence"] <= 0.5 * 0.7 * full["confidence"] + 1e-3


@pytest.mark.parametrize("oblique", [False, True])
def test_output_on_the_input_grid_ipr_anisotropic(oblique):
    ras, expected, _ = _spine(5, spacing=(4.0, 1.0, 1.2))
    ipr, _ = reorient(ras, "IPR")
    exp_ipr, _ = reorient(ras.with_array(expected), "IPR")
    if oblique:
        a = math.radians(15.0)
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        ipr = Volume(ipr.array, ipr.spacing, tuple(rot @ np.asarray(ipr.origin)), rot @ ipr.direction)
    assert ipr.orientation() == "IPR"
    out, report = assign_levels(ipr)
    assert out.shape == ipr.shape and not out.geometry_mismatch(ipr)
    assert _agreement(out.array, exp_ipr.array) == 1.0
    assert report["anchor"] == "sacrum"


def test_disc_id_follows_the_body_above():
    vol, expected, _ = _spine(5)
    out, _ = assign_levels(vol, anchor="top", top_name="T12")
    got = _majority(out.array, expected)
    for body in (20, 21, 22, 23):
        assert got[DISC_OFFSET + body] == DISC_OFFSET + got[body]
    assert got[20] == 19 and got[124] == 123  # T12..L4, S1 -> L5 (forced top, counted down)


def test_empty_and_disc_only_maps_give_empty_instances():
    vol, _, _ = _spine(4)
    empty = vol.with_array(np.zeros(vol.shape, np.uint8))
    out, report = assign_levels(empty)
    assert not out.array.any() and report["warnings"] and report["confidence"] == 0.0
    discs_only = vol.with_array(np.where(vol.array == 2, 2, 0).astype(np.uint8))
    out, report = assign_levels(discs_only)
    assert not out.array.any() and "discs cannot be labelled" in report["warnings"][0]


def test_bad_input_is_rejected():
    vol, _, _ = _spine(4)
    bad = vol.array.astype(np.int32)
    bad[0, 0, 0], bad[0, 0, 1] = 3, 7
    with pytest.raises(ValueError, match=r"\[3, 7\]"):
        assign_levels(vol.with_array(bad))
    with pytest.raises(ValueError, match="anchor"):
        assign_levels(vol, anchor="middle")
    with pytest.raises(ValueError, match="n_lumbar"):
        assign_levels(vol, n_lumbar=4)
    with pytest.raises(ValueError, match="top_name"):
        assign_levels(vol, top_name="X9")
    with pytest.raises(TypeError):
        assign_levels(vol.array)
    with pytest.raises(ValueError, match="sacrum_threshold"):
        InstanceConfig(sacrum_threshold=0.0)


@pytest.mark.parametrize("n_lumbar", [5, 6])
def test_project_phantom_levels_are_recovered(n_lumbar):
    phantom = pytest.importorskip("SpineSynthSegLib.phantom")
    # a field of view long enough to hold S1 whole (the default one may cut it)
    vol, table = phantom.generate_phantom(phantom.PhantomConfig(n_lumbar=n_lumbar, shape=(192, 112, 64)), seed=1)
    target = table.target_map(vol.array)
    sem = np.where((target > 0) & (target < DISC_OFFSET), 1, np.where(target >= DISC_OFFSET, 2, 0)).astype(np.uint8)
    out, report = assign_levels(vol.with_array(sem), n_lumbar=n_lumbar if n_lumbar == 6 else None)
    assert report["anchor"] == "sacrum"
    got = _majority(out.array, target)
    assert got == {v: v for v in got}
    assert (out.array[target > 0] == target[target > 0]).mean() > 0.999


def test_remnant_disc_at_the_image_border_marks_s1():
    """A large S1 piece, the S1-S2 remnant under it, and the image ending there: still S1."""
    vol, expected, _ = _spine(5)
    sem = _keep_part_of_s1(vol.array, expected, 0.55)
    s1 = np.argwhere((sem == 1) & (expected == 26))
    centre = s1.mean(axis=0)
    i, j, k = np.indices(sem.shape)
    bottom = s1[:, 2].min() - 4
    sem[((i - centre[0]) ** 2 + (j - centre[1]) ** 2 <= 6**2) & (k >= bottom) & (k <= bottom + 1) & (sem == 0)] = 2
    cut = int(bottom)  # the field of view ends at the remnant's lower face
    cropped = Volume(sem[:, :, cut:].copy(), vol.spacing, tuple(vol.affine[:3, :3] @ [0, 0, cut] + vol.origin),
                     vol.direction)
    no_size_cue = InstanceConfig(depth_ratio=(5.0, 6.0), volume_ratio=(5.0, 6.0), fragment_ratio=(0.01, 0.02))
    out, report = assign_levels(cropped, config=no_size_cue)  # the remnant alone must decide
    assert report["anchor"] == "sacrum", report["sacrum_features"]
    got = _majority(out.array, np.where(cropped.array == 1, expected[:, :, cut:], 0))
    assert [got[v] for v in (20, 21, 22, 23, 24, 26)] == [20, 21, 22, 23, 24, 26]
