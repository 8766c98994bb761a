"""Tests of SpineSynthSegLib.io: geometry-preserving I/O, validation, reorientation, resampling."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from SpineSynthSegLib import io as sio
from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.io import (
    Reorientation,
    Volume,
    check_image,
    check_labels,
    check_same_geometry,
    from_sitk,
    read_image,
    read_labels,
    read_volume,
    reorient,
    to_sitk,
    write_bytes_atomic,
    write_volume,
)
from SpineSynthSegLib.resampling import grid_for_spacing, resample, resample_to

SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")

# ----------------------------------------------------------------------------- helpers

_RAS_VECTORS = {
    "R": (1, 0, 0),
    "L": (-1, 0, 0),
    "A": (0, 1, 0),
    "P": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def shared_data_dir() -> Path:
    """The project's reference data folder (../shared/data); skip the test when it is absent."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"shared reference data not found at {path}")
    return path


def shared_sample(relative: str) -> Path:
    path = shared_data_dir() / "samples" / relative
    if not path.exists():
        pytest.skip(f"shared sample {relative} not found")
    return path


def direction_from_codes(codes: str) -> np.ndarray:
    """LPS direction matrix whose array axes point along the RAS axis codes, e.g. 'IPR'."""
    ras = np.array([_RAS_VECTORS[c] for c in codes], dtype=float).T  # column a = RAS axis a
    return _LPS_TO_RAS @ ras


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rz @ Ry @ Rx (extrinsic x-y-z rotation, radians)."""
    return Rotation.from_euler("xyz", [ax, ay, az]).as_matrix()


OBLIQUE = rotation(0.31, -0.22, 0.47)  # not aligned with any axis (all angles well below 45 deg)

DIRECTIONS = {
    "RAS": direction_from_codes("RAS"),
    "LPS": direction_from_codes("LPS"),
    "IPR": direction_from_codes("IPR"),
    "PIR": direction_from_codes("PIR"),
    "oblique": OBLIQUE,
    "oblique-PIR": OBLIQUE @ direction_from_codes("PIR"),
}


def make_volume(
    shape=(7, 6, 5),
    spacing=(0.7, 1.3, 2.5),
    origin=(-12.25, 33.5, 101.75),
    direction=None,
    dtype=np.float32,
    seed: int = 0,
) -> Volume:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        array = rng.normal(100.0, 40.0, shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        lo, hi = max(int(info.min), -30000), min(int(info.max), 30000)
        array = rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype)
    return Volume(array, spacing, origin, OBLIQUE if direction is None else direction)


def world(vol: Volume, index) -> np.ndarray:
    """LPS world position(s) of voxel index/indices (..., 3)."""
    index = np.asarray(index, dtype=float)
    return index @ (vol.direction * np.asarray(vol.spacing)[None, :]).T + np.asarray(vol.origin)


def continuous_index(vol: Volume, points) -> np.ndarray:
    aff = np.linalg.inv(vol.affine)
    return np.asarray(points, dtype=float) @ aff[:3, :3].T + aff[:3, 3]


def all_indices(shape) -> np.ndarray:
    return np.indices(shape).reshape(3, -1).T


def ramp_volume(shape, spacing, origin, direction, coef=(0.8, -1.7, 2.3), offset=50.0) -> Volume:
    """A volume whose value is a linear function of the LPS world position."""
    vol = Volume(np.zeros(shape, np.float32), spacing, origin, direction)
    values = world(vol, all_indices(shape)) @ np.asarray(coef) + offset
    return vol.with_array(values.reshape(shape).astype(np.float64))


def ramp_value(points, coef=(0.8, -1.7, 2.3), offset=50.0) -> np.ndarray:
    return np.asarray(points) @ np.asarray(coef) + offset


def interior_mask(source: Volume, target: Volume, margin: float = 1e-6) -> np.ndarray:
    """Voxels of ``target`` whose centre lies inside the hull of ``source`` voxel centres."""
    cidx = continuous_index(source, world(target, all_indices(target.shape)))
    upper = np.asarray(source.shape) - 1
    inside = np.all((cidx >= -margin) & (cidx <= upper + margin), axis=1)
    return inside.reshape(target.shape)


def assert_geometry(a: Volume, b: Volume, atol: float = 1e-9) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=atol, rtol=0)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol * 100, rtol=0)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol, rtol=0)


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def geometry_tolerance(suffix: str) -> float:
    # NIfTI keeps spacing, origin and the orientation matrix in float32; NRRD/MHA write text.
    return 2e-5 if suffix.startswith(".nii") else 1e-9


# ----------------------------------------------------------------------------- Volume basics


def test_volume_affine_and_ras_affine():
    vol = make_volume()
    aff = vol.affine
    np.testing.assert_allclose(aff[:3, :3], OBLIQUE * np.asarray(vol.spacing))
    np.testing.assert_allclose(aff[:3, 3], vol.origin)
    np.testing.assert_allclose(vol.affine_ras[:3], _LPS_TO_RAS @ aff[:3])
    again = Volume.from_affine_ras(vol.array, vol.affine_ras)
    assert_geometry(again, vol, atol=1e-12)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "IPR", "PIR", "LAS", "SAR"])
def test_volume_orientation_codes(codes):
    vol = make_volume(direction=direction_from_codes(codes))
    assert vol.orientation() == codes


def test_volume_rejects_non_3d_and_bad_spacing():
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros((4, 4)))
    with pytest.raises(InputError, match="spacing"):
        Volume(np.zeros((4, 4, 4)), spacing=(1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        Volume(np.zeros((4, 4, 4)), spacing=(1.0, -2.0, 1.0))


def test_with_array_keeps_geometry_and_checks_shape():
    vol = make_volume()
    other = vol.with_array(np.ones(vol.shape, np.int16))
    assert_geometry(other, vol, atol=0)
    assert other.direction is not vol.direction
    with pytest.raises(ValueError, match="shape"):
        vol.with_array(np.ones((2, 2, 2)))


def test_sitk_bridge_round_trip_and_axis_order():
    vol = make_volume(shape=(4, 5, 6), direction=DIRECTIONS["oblique-PIR"])
    img = to_sitk(vol)
    assert img.GetSize() == (4, 5, 6)  # ITK size order == array axis order
    assert img.GetPixel(1, 2, 3) == pytest.approx(float(vol.array[1, 2, 3]))
    np.testing.assert_allclose(img.TransformIndexToPhysicalPoint((1, 2, 3)), world(vol, (1, 2, 3)), atol=1e-9)
    back = from_sitk(img)
    np.testing.assert_array_equal(back.array, vol.array)
    assert_geometry(back, vol, atol=1e-12)


# ----------------------------------------------------------------------------- write -> read round trips


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_array_and_geometry(tmp_path, suffix, orientation):
    vol = make_volume(direction=DIRECTIONS[orientation], dtype=np.float32)
    path = write_volume(vol, tmp_path / f"vol{suffix}")
    assert path == tmp_path / f"vol{suffix}" and path.is_file()
    back = read_volume(path)
    assert back.array.dtype == vol.array.dtype
    np.testing.assert_array_equal(back.array, vol.array)
    assert_geometry(back, vol, atol=geometry_tolerance(suffix))
    assert back.orientation() == vol.orientation()


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64, np.float32, np.float64]
)
@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_keeps_dtype(tmp_path, suffix, dtype):
    vol = make_volume(shape=(5, 4, 3), direction=DIRECTIONS["oblique"], dtype=dtype, seed=3)
    back = read_volume(write_volume(vol, tmp_path / f"d{suffix}"))
    assert back.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_written_nifti_affine_matches_nibabel(tmp_path, orientation):
    """ITK's LPS geometry and nibabel's RAS affine describe the same voxel-to-world map."""
    vol = make_volume(direction=DIRECTIONS[orientation])
    path = write_volume(vol, tmp_path / "v.nii.gz")
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, vol.affine_ras, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), vol.array)  # same axis order as nibabel
    assert "".join(nib.aff2axcodes(img.affine)) == vol.orientation()


def test_nibabel_written_file_reads_with_same_geometry(tmp_path):
    affine = np.eye(4)
    affine[:3, :3] = (_LPS_TO_RAS @ DIRECTIONS["oblique-PIR"]) * np.array([0.9, 1.1, 3.0])
    affine[:3, 3] = (4.5, -20.0, 7.25)
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "n.nii.gz")
    vol = read_volume(tmp_path / "n.nii.gz")
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine_ras, affine, atol=1e-4)


def test_single_slice_volume_stays_3d(tmp_path):
    vol = make_volume(shape=(4, 5, 1), direction=np.eye(3))
    for suffix in SUFFIXES:
        back = read_volume(write_volume(vol, tmp_path / f"one{suffix}"))
        assert back.shape == (4, 5, 1)


def test_write_accepts_str_path_and_creates_folders(tmp_path):
    target = tmp_path / "a" / "b" / "v.mha"
    out = write_volume(make_volume(), str(target))
    assert out == target and target.is_file()


def test_compression_flag_shrinks_output(tmp_path):
    vol = Volume(np.zeros((30, 30, 30), np.int16))
    small = write_volume(vol, tmp_path / "c.mha", compress=True)
    big = write_volume(vol, tmp_path / "u.mha", compress=False)
    assert small.stat().st_size < big.stat().st_size / 5
    np.testing.assert_array_equal(read_volume(small).array, vol.array)


# ----------------------------------------------------------------------------- reorientation


REORIENT_CASES = {
    **DIRECTIONS,
    "LIA": direction_from_codes("LIA"),
    "oblique-SLP": rotation(-0.2, 0.35, 0.1) @ direction_from_codes("SLP"),
}


def _check_reorient(vol: Volume, target: str = "RAS") -> None:
    canon, reo = reorient(vol, target)
    assert isinstance(reo, Reorientation)
    assert canon.orientation() == target
    assert sorted(canon.shape) == sorted(vol.shape)
    assert canon.array.dtype == vol.array.dtype
    assert np.prod(canon.spacing) == pytest.approx(np.prod(vol.spacing))

    # every voxel keeps its world position and value
    idx = all_indices(vol.shape)
    cidx = continuous_index(canon, world(vol, idx))
    rounded = np.rint(cidx)
    np.testing.assert_allclose(cidx, rounded, atol=1e-6)
    rounded = rounded.astype(int)
    assert (rounded >= 0).all() and (rounded < np.asarray(canon.shape)).all()
    np.testing.assert_array_equal(canon.array[tuple(rounded.T)], vol.array[tuple(idx.T)])

    # undo restores the array and the geometry exactly
    back = reo.undo(canon)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    np.testing.assert_allclose(back.affine_ras, vol.affine_ras, atol=1e-9)
    assert back.orientation() == vol.orientation()


@pytest.mark.parametrize("case", sorted(REORIENT_CASES))
def test_reorient_to_ras_and_undo(case):
    _check_reorient(make_volume(shape=(7, 6, 5), direction=REORIENT_CASES[case], dtype=np.int16))


@pytest.mark.parametrize("target", ["LPS", "PIR", "IPR", "SAR"])
def test_reorient_to_other_codes(target):
    _check_reorient(make_volume(direction=DIRECTIONS["oblique"]), target)


def test_reorient_keeps_oblique_direction_oblique():
    vol = make_volume(direction=DIRECTIONS["oblique-PIR"])
    canon, _ = reorient(vol)
    # columns are the original ones, permuted and possibly negated: still not axis-aligned
    assert np.abs(canon.direction).max() < 0.999
    for col in canon.direction.T:
        assert any(np.allclose(col, s * c) for c in vol.direction.T for s in (1, -1))


def test_reorient_identity_when_already_canonical():
    vol = make_volume(direction=direction_from_codes("RAS"))
    canon, reo = reorient(vol, "RAS")
    np.testing.assert_array_equal(canon.array, vol.array)
    np.testing.assert_allclose(canon.affine, vol.affine, atol=1e-12)
    np.testing.assert_allclose(reo.transform, [[0, 1], [1, 1], [2, 1]])


def test_undo_rejects_foreign_volume():
    vol = make_volume(shape=(7, 6, 5), direction=direction_from_codes("PIR"))
    _, reo = reorient(vol)
    with pytest.raises(ValueError, match="not produced"):
        reo.undo(make_volume(shape=(7, 6, 5)))


@settings(max_examples=60, deadline=None)
@given(
    perm=st.permutations([0, 1, 2]),
    flips=st.tuples(st.booleans(), st.booleans(), st.booleans()),
    angles=st.tuples(*[st.floats(-0.45, 0.45, allow_nan=False)] * 3),
    shape=st.tuples(*[st.integers(1, 6)] * 3),
    spacing=st.tuples(*[st.floats(0.2, 4.0, allow_nan=False)] * 3),
    origin=st.tuples(*[st.floats(-300.0, 300.0, allow_nan=False)] * 3),
)
def test_reorient_property(perm, flips, angles, shape, spacing, origin):
    signed_perm = np.zeros((3, 3))
    for axis, (dst, flip) in enumerate(zip(perm, flips, strict=True)):
        signed_perm[dst, axis] = -1.0 if flip else 1.0
    direction = rotation(*angles) @ signed_perm
    array = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    _check_reorient(Volume(array, spacing, origin, direction))


# ----------------------------------------------------------------------------- resampling


BASE_GRID = {"shape": (10, 12, 7), "spacing": (1.0, 0.8, 2.5), "origin": (3.0, -7.5, 20.0)}


def _extent(vol: Volume) -> np.ndarray:
    return np.asarray(vol.shape) * np.asarray(vol.spacing)


def _centre(vol: Volume) -> np.ndarray:
    return world(vol, (np.asarray(vol.shape) - 1) / 2)


@pytest.mark.parametrize(
    "spacing", [(0.5, 0.4, 1.25), (2.0, 1.6, 5.0), (0.5, 0.5, 0.5), (2.0, 2.0, 2.0), (3.0, 1.7, 4.0)]
)
@pytest.mark.parametrize("orientation", ["RAS", "oblique-PIR"])
def test_grid_for_spacing_keeps_field_of_view_and_centre(spacing, orientation):
    vol = ramp_volume(direction=DIRECTIONS[orientation], **BASE_GRID)
    grid = grid_for_spacing(vol, spacing)
    np.testing.assert_allclose(grid.spacing, spacing)
    np.testing.assert_allclose(grid.direction, vol.direction, atol=1e-12)
    np.testing.assert_allclose(_centre(grid), _centre(vol), atol=1e-9)
    # extent is rounded to whole voxels: off by at most half a new voxel at each end
    assert np.all(np.abs(_extent(grid) - _extent(vol)) <= np.asarray(spacing) / 2 + 1e-9)


def test_grid_for_spacing_exact_extent_when_divisible():
    vol = ramp_volume(direction=OBLIQUE, **BASE_GRID)
    grid = grid_for_spacing(vol, (0.5, 0.4, 1.25))
    assert grid.shape == (20, 24, 14)
    np.testing.assert_allclose(_extent(grid), _extent(vol), atol=1e-9)
    # the outer corner (voxel edge) is shared
    corner_old = world(vol, (-0.5, -0.5, -0.5))
    corner_new = world(grid, (-0.5, -0.5, -0.5))
    np.testing.assert_allclose(corner_new, corner_old, atol=1e-9)


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, 0.0, 1.0), (1.0, -1.0, 2.0), (1.0, float("nan"), 1.0)])
def test_grid_for_spacing_rejects_bad_spacing(bad):
    with pytest.raises(InputError, match="spacing"):
        grid_for_spacing(make_volume(), bad)


@pytest.mark.parametrize("spacing", [(0.5, 0.4, 1.25), (2.0, 1.6, 5.0), (0.7, 1.9, 1.1)])
@pytest.mark.parametrize("orientation", ["RAS", "oblique-PIR"])
def test_resample_linear_ramp_exact_in_interior(spacing, orientation):
    vol = ramp_volume(direction=DIRECTIONS[orientation], **BASE_GRID)
    out = resample(vol, spacing, "linear")
    assert out.array.dtype == np.float32
    np.testing.assert_allclose(_centre(out), _centre(vol), atol=1e-9)
    assert np.all(np.abs(_extent(out) - _extent(vol)) <= np.asarray(spacing) / 2 + 1e-9)
    inside = interior_mask(vol, out)
    assert inside.sum() > 10
    expected = ramp_value(world(out, all_indices(out.shape))).reshape(out.shape)
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=2e-3)


def test_resample_same_spacing_is_identity():
    vol = ramp_volume(direction=OBLIQUE, **BASE_GRID)
    out = resample(vol, vol.spacing, "linear")
    assert_geometry(out, vol, atol=1e-9)
    np.testing.assert_allclose(out.array, vol.array, atol=1e-3)


def test_resample_bspline_works_on_smooth_image():
    vol = ramp_volume(direction=OBLIQUE, **BASE_GRID)
    out = resample(vol, (0.6, 0.6, 0.6), "bspline")
    assert out.array.dtype == np.float32
    assert np.isfinite(out.array).all()
    # B-spline reproduces a linear function well away from the edges
    cidx = continuous_index(vol, world(out, all_indices(out.shape)))
    deep = np.all((cidx >= 2) & (cidx <= np.asarray(vol.shape) - 3), axis=1).reshape(out.shape)
    assert deep.sum() > 10
    expected = ramp_value(world(out, all_indices(out.shape))).reshape(out.shape)
    # (the mirror boundary condition of the prefilter leaves small errors on this short grid)
    np.testing.assert_allclose(out.array[deep], expected[deep], atol=0.5)
    assert np.corrcoef(out.array[deep], expected[deep])[0, 1] > 0.9999


def _label_volume(direction=None) -> Volume:
    shape = (12, 10, 8)
    array = np.zeros(shape, np.uint16)
    array[2:6, 2:8, 1:7] = 3
    array[6:11, 1:6, 2:6] = 7
    array[5:9, 6:9, 3:8] = 12
    return Volume(array, (1.5, 1.2, 2.0), (10.0, -5.0, 3.0), OBLIQUE if direction is None else direction)


@pytest.mark.parametrize("method", ["nearest", "onehot"])
@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (3.0, 2.0, 4.0), (0.7, 1.3, 1.1)])
def test_label_resampling_keeps_label_set(method, spacing):
    lab = _label_volume()
    out = resample(lab, spacing, method)
    assert out.array.dtype == lab.array.dtype
    assert set(np.unique(out.array)) <= set(np.unique(lab.array))
    np.testing.assert_allclose(_centre(out), _centre(lab), atol=1e-9)
    if min(spacing) < 1:  # upsampling keeps every label
        assert set(np.unique(out.array)) == set(np.unique(lab.array))


@pytest.mark.parametrize("method", ["nearest", "onehot"])
def test_label_resampling_back_and_forth_preserves_labels(method):
    lab = _label_volume(direction=np.eye(3))
    fine = resample(lab, (0.5, 0.4, 1.0), method)  # integer subdivision
    back = resample_to(fine, lab, "nearest")
    np.testing.assert_array_equal(back.array, lab.array)


def test_onehot_gives_smoother_boundaries_than_nearest():
    """Upsampling a coarse ball: nearest stays blocky, onehot follows the smooth shape."""
    coarse_spacing, n, radius = 4.0, 12, 17.0
    idx = np.indices((n, n, n)).transpose(1, 2, 3, 0) * coarse_spacing
    centre = (n - 1) * coarse_spacing / 2
    ball = (np.linalg.norm(idx - centre, axis=-1) < radius).astype(np.uint8) * 5
    vol = Volume(ball, (coarse_spacing,) * 3)
    results = {}
    for method in ("nearest", "onehot"):
        out = resample(vol, (1.0, 1.0, 1.0), method)
        assert set(np.unique(out.array)) == {0, 5}
        pts = world(out, all_indices(out.shape)).reshape(*out.shape, 3)
        truth = np.linalg.norm(pts - centre, axis=-1) < radius
        pred = out.array > 0
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        # blockiness: coarse 4x4x4 cells whose fine voxels do not all share one label
        cells = out.array.reshape(n, 4, n, 4, n, 4).transpose(0, 2, 4, 1, 3, 5).reshape(n, n, n, -1)
        mixed = int((cells.min(axis=-1) != cells.max(axis=-1)).sum())
        results[method] = (dice, mixed)
    assert results["nearest"][1] == 0  # every coarse voxel became a uniform block
    assert results["onehot"][1] > 20  # boundaries cut through coarse voxels
    assert results["onehot"][0] > results["nearest"][0] + 0.01


def test_onehot_matches_nearest_where_labels_are_uniform():
    lab = _label_volume()
    near = resample(lab, (0.8, 0.8, 0.8), "nearest")
    hot = resample(lab, (0.8, 0.8, 0.8), "onehot")
    agree = (near.array == hot.array).mean()
    assert agree > 0.85


def test_resample_unknown_method_raises():
    with pytest.raises(InputError, match="cubic"):
        resample(make_volume(), (1.0, 1.0, 1.0), "cubic")


def test_resample_to_reference_with_other_direction():
    src = ramp_volume(
        shape=(20, 18, 16),
        spacing=(1.0, 1.2, 1.5),
        origin=(-10.0, -10.0, -12.0),
        direction=DIRECTIONS["oblique-PIR"],
    )
    centre = _centre(src)
    ref_dir = rotation(0.5, 0.1, -0.6) @ direction_from_codes("LAS")
    ref_spacing = np.array([0.9, 1.1, 1.3])
    ref_shape = (9, 8, 7)
    ref_origin = centre - ref_dir @ ((np.asarray(ref_shape) - 1) * ref_spacing / 2)
    ref = Volume(np.zeros(ref_shape, np.int8), tuple(ref_spacing), tuple(ref_origin), ref_dir)

    out = resample_to(src, ref, "linear")
    assert_geometry(out, ref, atol=1e-9)
    inside = interior_mask(src, out)
    assert inside.mean() > 0.5
    expected = ramp_value(world(out, all_indices(out.shape))).reshape(out.shape)
    np.testing.assert_allclose(out.array[inside], expected[inside], atol=2e-3)
    # a few individual world points
    for ijk in [(4, 4, 3), (0, 7, 6), (8, 0, 1)]:
        if inside[ijk]:
            assert out.array[ijk] == pytest.approx(ramp_value(world(ref, ijk)), abs=2e-3)

    # outside the source field of view: the fill value
    far = Volume(np.zeros((3, 3, 3)), (1.0, 1.0, 1.0), (1000.0, 1000.0, 1000.0))
    np.testing.assert_array_equal(resample_to(src, far, "linear", fill=-7.0).array, -7.0)


def test_resample_to_nearest_labels_at_world_points():
    lab = _label_volume(direction=DIRECTIONS["oblique-PIR"])
    ref_dir = rotation(0.2, -0.4, 0.3)
    ref = Volume(
        np.zeros((25, 25, 25), np.uint8), (0.9, 0.9, 0.9), tuple(_centre(lab) - ref_dir @ ([12 * 0.9] * 3)), ref_dir
    )
    out = resample_to(lab, ref, "nearest")
    assert out.array.dtype == lab.array.dtype
    # each output voxel holds the label of the source voxel nearest to its world position
    cidx = continuous_index(lab, world(ref, all_indices(ref.shape)))
    nearest = np.rint(cidx).astype(int)
    ok = np.all((nearest >= 0) & (nearest < np.asarray(lab.shape)), axis=1)
    # skip points close to a rounding tie
    ok &= np.all(np.abs(cidx - np.rint(cidx)) < 0.45, axis=1)
    assert ok.sum() > 100
    expected = lab.array[tuple(nearest[ok].T)]
    np.testing.assert_array_equal(out.array.reshape(-1)[ok], expected)


# ----------------------------------------------------------------------------- bad input


def _assert_input_error(excinfo, path, *words):
    message = str(excinfo.value)
    assert Path(path).name in message
    for word in words:
        assert word.lower() in message.lower(), message


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.nii.gz"
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "not found")
    assert exc.value.source == str(path)
    with pytest.raises(InputError):
        read_image(path)
    with pytest.raises(InputError):
        read_labels(path)


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "cannot read")


def test_empty_file(tmp_path):
    path = tmp_path / "zero.nii"
    path.write_bytes(b"")
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "cannot read")


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_truncated_file(tmp_path, suffix):
    vol = make_volume(shape=(40, 40, 40))
    full = write_volume(vol, tmp_path / f"full{suffix}")
    data = full.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path)
    assert any(w in str(exc.value).lower() for w in ("truncated", "corrupt", "cannot read"))


def test_truncated_nifti_gz_names_truncation(tmp_path):
    full = write_volume(make_volume(shape=(30, 30, 30)), tmp_path / "full.nii.gz")
    data = full.read_bytes()
    path = tmp_path / "half.nii.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "truncated")


def test_nifti_with_short_data_inside_complete_gzip(tmp_path):
    """A well-formed gzip stream around a NIfTI that lacks voxel bytes is also rejected."""
    import gzip

    raw = write_volume(make_volume(shape=(20, 20, 20)), tmp_path / "full.nii").read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[: len(raw) - 1000]))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "truncated")


def test_2d_image_file(tmp_path):
    path = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(20, dtype=np.float32).reshape(4, 5), np.eye(4)), path)
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "3D", "2D")


def test_2d_nifti_with_a_sagittal_affine_says_2d(tmp_path):
    """ITK takes the 2x2 corner of a 3D affine as the direction of a 2D image: singular for a sagittal one."""
    path = tmp_path / "slice.nii.gz"
    affine = np.array([[0.0, 0, -1, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(np.arange(20, dtype=np.float32).reshape(4, 5), affine), path)
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "expected a 3D volume, got 2D")


def test_truncated_float_nifti_is_one_line(tmp_path):
    raw = write_volume(make_volume(shape=(20, 20, 20)).with_array(np.ones((20, 20, 20), np.float32)), tmp_path / "f.nii")
    path = tmp_path / "short.nii"
    path.write_bytes(raw.read_bytes()[:-1000])
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "truncated")
    assert "\n" not in str(exc.value)


def test_2d_mha_file(tmp_path):
    path = tmp_path / "flat.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((4, 5), np.float32)), str(path))
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "3D")


def test_4d_file_with_time_points(tmp_path):
    path = tmp_path / "time.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((4, 5, 6, 3)).astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "4D", "3D")


def test_4d_file_with_singleton_time_axis_is_accepted(tmp_path):
    path = tmp_path / "single.nii.gz"
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = (5.0, 6.0, 7.0)
    data = np.random.default_rng(2).random((4, 5, 6, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), path)
    vol = read_image(path)
    assert vol.shape == (4, 5, 6)
    np.testing.assert_array_equal(vol.array, data[..., 0])
    np.testing.assert_allclose(vol.spacing, (2.0, 3.0, 4.0))
    np.testing.assert_allclose(vol.affine_ras, affine, atol=1e-5)


def test_4d_sitk_image_with_singleton_axis_is_accepted():
    img = sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(1, 5, 4, 3), isVector=False)
    assert img.GetDimension() == 4
    img.SetSpacing((0.5, 1.0, 2.0, 1.0))
    vol = from_sitk(img)
    assert vol.shape == (3, 4, 5)
    np.testing.assert_allclose(vol.spacing, (0.5, 1.0, 2.0))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_vector_image(tmp_path, suffix):
    path = tmp_path / f"vec{suffix}"
    img = sitk.GetImageFromArray(np.random.default_rng(3).random((6, 5, 4, 3)).astype(np.float32), isVector=True)
    sitk.WriteImage(img, str(path))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "3 components")


def test_vector_nifti(tmp_path):
    path = tmp_path / "vec.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(4).random((4, 5, 6, 1, 3)).astype(np.float32), np.eye(4)), path)
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path)


def _patched_nifti(tmp_path, name, pixdim1=None, codes=None):
    """A valid uncompressed NIfTI with one header field overwritten at its byte offset."""
    import struct

    path = tmp_path / name
    nib.save(nib.Nifti1Image(np.random.default_rng(5).random((6, 7, 8)).astype(np.float32), np.diag([2.0, 1.0, 1.0, 1.0])), path)
    raw = bytearray(path.read_bytes())
    if pixdim1 is not None:
        raw[80:84] = struct.pack("<f", pixdim1)  # pixdim[1]
    if codes is not None:
        raw[252:256] = struct.pack("<hh", *codes)  # qform_code, sform_code
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim1", [0.0, float("nan")])
def test_nifti_with_unknown_voxel_size_is_refused(tmp_path, pixdim1):
    """ITK (and nibabel) would read a zero voxel size as 1 mm: silently wrong millimetres."""
    path = _patched_nifti(tmp_path, "size.nii", pixdim1=pixdim1)
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "voxel size", "zero or not a number")


def test_nifti_without_orientation_is_refused(tmp_path):
    path = _patched_nifti(tmp_path, "codes.nii", codes=(0, 0))
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "no orientation", "qform_code and sform_code")
    for codes in ((1, 0), (0, 1)):  # either one is enough
        assert read_volume(_patched_nifti(tmp_path, f"c{codes[0]}{codes[1]}.nii", codes=codes)).spacing == pytest.approx((2.0, 1.0, 1.0))


def test_nrrd_without_space_is_refused(tmp_path):
    data = np.random.default_rng(6).random((4, 5, 6)).astype(np.float32)
    head = "NRRD0004\ntype: float\ndimension: 3\nsizes: 6 5 4\nspacings: 0.5 0.5 4\nendian: little\nencoding: raw\n\n"
    path = tmp_path / "nospace.nrrd"
    path.write_bytes(head.encode() + data.tobytes())
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "no 'space' field", "orientation")
    spaced = head.replace("spacings: 0.5 0.5 4\n", "space: left-posterior-superior\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,4)\n")
    path.write_bytes(spaced.encode() + data.tobytes())
    assert read_volume(path).spacing == pytest.approx((0.5, 0.5, 4.0))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_image_rejects_non_finite(tmp_path, bad):
    arr = make_volume().array.copy()
    arr[1, 2, 3] = bad
    arr[4, 0, 1] = bad
    path = write_volume(make_volume().with_array(arr), tmp_path / "nan.nii.gz")
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "2 NaN/Inf")


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_read_volume_keeps_non_finite_values(tmp_path, suffix, dtype):
    """ITK reads NIfTI NaN/Inf as 0; read_volume must hand them on unchanged."""
    arr = make_volume(dtype=dtype).array.copy()
    arr[1, 2, 3], arr[0, 0, 0], arr[6, 5, 4] = np.nan, np.inf, -np.inf
    vol = read_volume(write_volume(make_volume().with_array(arr), tmp_path / f"n{suffix}"))
    assert vol.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(vol.array, arr)  # NaN compare equal here


def test_read_labels_rejects_nan_in_nifti(tmp_path):
    arr = np.zeros((4, 4, 4), np.float32)
    arr[2, 2, 2] = np.nan
    path = write_volume(Volume(arr), tmp_path / "nanlab.nii.gz")
    with pytest.raises(InputError) as exc:
        read_labels(path)
    _assert_input_error(exc, path, "NaN")


def test_read_image_rejects_constant_volume(tmp_path):
    path = write_volume(Volume(np.full((4, 4, 4), 7, np.int16)), tmp_path / "flat.nrrd")
    with pytest.raises(InputError) as exc:
        read_image(path)
    _assert_input_error(exc, path, "constant", "7")


def test_read_image_returns_float32(tmp_path):
    vol = make_volume(dtype=np.int16)
    out = read_image(write_volume(vol, tmp_path / "i.nii.gz"))
    assert out.array.dtype == np.float32
    np.testing.assert_array_equal(out.array, vol.array.astype(np.float32))


def test_check_image_and_labels_reject_empty():
    empty = Volume(np.zeros((0, 4, 4), np.float32))
    with pytest.raises(InputError) as exc:
        check_image(empty, "empty_img.nii")
    _assert_input_error(exc, "empty_img.nii", "empty")
    with pytest.raises(InputError) as exc:
        check_labels(empty, "empty_lab.nii")
    _assert_input_error(exc, "empty_lab.nii", "empty")
    one_slice = Volume(np.random.default_rng(0).random((1, 64, 64)).astype(np.float32))
    with pytest.raises(InputError) as exc:
        check_image(one_slice, "slice_img.nii")
    _assert_input_error(exc, "slice_img.nii", "single slice")


def test_check_image_accepts_normal_volume():
    vol = make_volume()
    assert check_image(vol, "ok.nii") is vol


def test_read_labels_float_integers_become_int32(tmp_path):
    arr = np.zeros((5, 5, 5), np.float64)
    arr[1:3, 1:3, 1:3] = 20.0
    arr[3:, 3:, 3:] = 7.0
    vol = Volume(arr, (1.0, 1.0, 2.0), (1.0, 2.0, 3.0), OBLIQUE)
    out = read_labels(write_volume(vol, tmp_path / "lab.nii.gz"))
    assert out.array.dtype == np.int32
    np.testing.assert_array_equal(out.array, arr.astype(np.int32))
    assert_geometry(out, vol, atol=2e-5)


def test_read_labels_rejects_non_integer(tmp_path):
    path = write_volume(make_volume(dtype=np.float32), tmp_path / "mri.nii.gz")
    with pytest.raises(InputError) as exc:
        read_labels(path)
    _assert_input_error(exc, path, "non-integer")


def test_read_labels_rejects_negative(tmp_path):
    arr = np.zeros((4, 4, 4), np.int16)
    arr[0, 0, 0] = -3
    path = write_volume(Volume(arr), tmp_path / "neg.mha")
    with pytest.raises(InputError) as exc:
        read_labels(path)
    _assert_input_error(exc, path, "negative", "-3")


def test_check_labels_rejects_nan_and_huge():
    arr = np.zeros((3, 3, 3), np.float32)
    arr[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_labels(Volume(arr), "nan_lab.nii")
    big = np.zeros((3, 3, 3), np.uint32)
    big[0, 0, 0] = 2**31
    with pytest.raises(InputError, match="too large") as exc:
        check_labels(Volume(big), "big_lab.nii")
    _assert_input_error(exc, "big_lab.nii")


def test_check_same_geometry():
    a = make_volume()
    check_same_geometry(a, a.with_array(np.zeros(a.shape)), "img.nii.gz", "seg.nii.gz")
    cases = {
        "spacing": Volume(a.array, (0.7, 1.3, 2.6), a.origin, a.direction),
        "origin": Volume(a.array, a.spacing, (0.0, 33.5, 101.75), a.direction),
        "direction": Volume(a.array, a.spacing, a.origin, np.eye(3)),
        "shape": make_volume(shape=(7, 6, 4)),
    }
    for prop, other in cases.items():
        with pytest.raises(InputError) as exc:
            check_same_geometry(a, other, "img.nii.gz", "seg.nii.gz")
        message = str(exc.value)
        assert "img.nii.gz" in message and "seg.nii.gz" in message
        assert prop in message, message


def test_check_same_geometry_tolerates_float32_noise():
    a = make_volume()
    b = Volume(a.array, np.float32(a.spacing), np.float32(a.origin), np.float32(a.direction))
    check_same_geometry(a, b, "a", "b")


@pytest.mark.parametrize("name", ["out.png", "out.txt", "out", "out.nii.bz2"])
def test_unsupported_write_suffix(tmp_path, name):
    folder = tmp_path / "o"
    folder.mkdir()
    with pytest.raises(InputError) as exc:
        write_volume(make_volume(), folder / name)
    _assert_input_error(exc, folder / name, "unsupported")
    assert listing(folder) == []


def test_unsupported_read_suffix(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InputError) as exc:
        read_volume(path)
    _assert_input_error(exc, path, "cannot read")


# ----------------------------------------------------------------------------- atomic writes


def _failing_write(monkeypatch):
    seen = []

    def fake(image, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial data")
        seen.append(filename)
        raise RuntimeError("disk full")

    monkeypatch.setattr(sio.sitk, "WriteImage", fake)
    return seen


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_failed_write_leaves_nothing(tmp_path, monkeypatch, suffix):
    folder = tmp_path / "out"
    folder.mkdir()
    seen = _failing_write(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        write_volume(make_volume(), folder / f"v{suffix}")
    assert seen and Path(seen[0]).parent == folder  # the temp file was in the target folder
    assert listing(folder) == []


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    old = make_volume(seed=1)
    target = write_volume(old, tmp_path / "v.nii.gz")
    before = target.read_bytes()
    _failing_write(monkeypatch)
    with pytest.raises(RuntimeError):
        write_volume(make_volume(seed=2), target)
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["v.nii.gz"]


def test_failed_conversion_leaves_nothing(tmp_path):
    # float16 has no ITK pixel type: the failure happens before WriteImage
    vol = Volume(np.ones((3, 3, 3), np.float16))
    with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is left behind
        write_volume(vol, tmp_path / "h.nii.gz")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_overwrite_replaces_file_fully(tmp_path, suffix):
    target = tmp_path / f"v{suffix}"
    write_volume(make_volume(shape=(30, 30, 30), dtype=np.float64, seed=1), target)
    big_size = target.stat().st_size
    small = make_volume(shape=(3, 4, 5), dtype=np.uint8, direction=direction_from_codes("PIR"), seed=2)
    write_volume(small, target)
    assert target.stat().st_size < big_size
    back = read_volume(target)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, small.array)
    assert_geometry(back, small, atol=geometry_tolerance(suffix))
    assert listing(tmp_path) == [target.name]


def test_written_file_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        fresh = write_volume(make_volume(), tmp_path / "fresh.nii.gz")
        assert fresh.stat().st_mode & 0o777 == 0o644
        raw = write_bytes_atomic(b"{}", tmp_path / "fresh.json")
        assert raw.stat().st_mode & 0o777 == 0o644
        # overwriting keeps the permissions of the existing file
        os.chmod(fresh, 0o640)
        write_volume(make_volume(seed=5), fresh)
        assert fresh.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)


def test_write_bytes_atomic_replaces_and_creates_folders(tmp_path):
    target = tmp_path / "sub" / "report.json"
    assert write_bytes_atomic(b"x" * 10000, target) == target
    write_bytes_atomic(b"short", target)
    assert target.read_bytes() == b"short"
    assert listing(target.parent) == ["report.json"]


def test_write_bytes_atomic_failure_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(sio.os, "replace", fail)
    with pytest.raises(OSError, match="rename failed"):
        write_bytes_atomic(b"new content", target)
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["report.json"]


# ----------------------------------------------------------------------------- DICOM


def test_read_dicom_series_folder():
    folder = shared_sample("totalsegmentator_tests/example_ct_dicom")
    vol = read_volume(folder)
    assert vol.shape == (512, 512, 20)
    np.testing.assert_allclose(vol.spacing, (0.977, 0.977, 2.0), atol=1e-3)
    assert np.issubdtype(vol.array.dtype, np.integer)
    assert vol.orientation() == "LPS"
    img = read_image(folder)
    assert img.array.dtype == np.float32
    assert img.array.min() < -500 < 500 < img.array.max()  # CT in Hounsfield units (air and bone)


def test_dicom_grid_matches_its_nifti_segmentation():
    """The DICOM series (LPS) and the NIfTI mask made on it (LAS) describe the same grid."""
    ct = read_volume(shared_sample("totalsegmentator_tests/example_ct_dicom"))
    seg = read_labels(shared_sample("totalsegmentator_tests/example_seg_dicom.nii.gz"))
    assert seg.orientation() == "LAS"
    ct_ras, _ = reorient(ct, "RAS")
    seg_ras, _ = reorient(seg, "RAS")
    check_same_geometry(ct_ras, seg_ras, "ct", "seg")


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path):
    """ITK stacks the slices left at one spacing (a warning only); every slice after the gap moves."""
    import shutil

    folder = tmp_path / "gap_dicom"
    shutil.copytree(shared_sample("totalsegmentator_tests/example_ct_dicom"), folder)
    assert read_volume(folder).shape[2] == 20  # the intact copy reads
    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(str(folder))  # sorted along the slice normal
    Path(files[7]).unlink()
    with pytest.raises(InputError) as exc:
        read_volume(folder)
    _assert_input_error(exc, folder, "not evenly spaced", "missing or repeated")


def test_empty_folder_has_no_dicom_series(tmp_path):
    folder = tmp_path / "empty_dicom"
    folder.mkdir()
    with pytest.raises(InputError) as exc:
        read_volume(folder)
    _assert_input_error(exc, folder, "no DICOM series")


def test_folder_without_dicom_files(tmp_path):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "a.txt").write_text("nothing")
    write_volume(make_volume(), folder / "b.nii.gz")
    with pytest.raises(InputError) as exc:
        read_volume(folder)
    _assert_input_error(exc, folder, "no DICOM series")


# ----------------------------------------------------------------------------- real NIfTI samples

REAL_SAMPLES = [
    ("tptbox_samples/sub-mri_label-6_T2w.nii.gz", (68, 52, 67), "PIR", np.uint16),
    ("tptbox_samples/sub-ct_label-22_ct.nii.gz", (73, 47, 73), "PIR", np.int16),
    ("verse_sub-verse004_mask/sub-verse004_seg-vert_msk.nii.gz", (161, 338, 61), "PIR", np.float64),
    ("sct_testing_data_cervical/t2_t2.nii.gz", (60, 55, 52), "PSR", np.int16),
    ("totalsegmentator_tests/example_mr_sm.nii.gz", (117, 91, 20), "LPS", np.int16),
]


@pytest.mark.parametrize(("relative", "shape", "codes", "dtype"), REAL_SAMPLES)
def test_real_nifti_geometry_matches_nibabel(relative, shape, codes, dtype):
    path = shared_sample(relative)
    vol = read_volume(path)
    img = nib.load(path)
    assert vol.shape == shape
    assert vol.array.dtype == np.dtype(dtype)
    assert vol.orientation() == codes == "".join(nib.aff2axcodes(img.affine))
    np.testing.assert_allclose(vol.affine_ras, img.affine, atol=1e-4)
    np.testing.assert_array_equal(vol.array, np.asanyarray(img.dataobj))


@pytest.mark.parametrize(("relative", "shape", "codes", "dtype"), REAL_SAMPLES[:3])
def test_real_nifti_reorient_round_trip(relative, shape, codes, dtype, tmp_path):
    vol = read_volume(shared_sample(relative))
    canon, reo = reorient(vol, "RAS")
    assert canon.orientation() == "RAS"
    assert canon.shape == tuple(
        shape[i] for i in np.argsort([{"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}[c] for c in codes])
    )
    back = reo.undo(canon)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-9)
    # the canonical volume written and read back through nibabel is the same image in RAS
    path = write_volume(canon, tmp_path / "canon.nii.gz")
    img = nib.as_closest_canonical(nib.load(shared_sample(relative)))
    np.testing.assert_allclose(nib.load(path).affine, img.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asanyarray(nib.load(path).dataobj), np.asanyarray(img.dataobj))


def test_real_tptbox_t2w_is_pir():
    vol = read_image(shared_sample("tptbox_samples/sub-mri_label-6_T2w.nii.gz"))
    assert vol.orientation() == "PIR"
    assert vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.spacing, (1.5, 1.5, 1.5), atol=1e-4)


def test_real_verse_float64_mask_read_as_int32_labels():
    path = shared_sample("verse_sub-verse004_mask/sub-verse004_seg-vert_msk.nii.gz")
    assert nib.load(path).get_data_dtype() == np.float64
    lab = read_labels(path)
    assert lab.array.dtype == np.int32
    assert set(np.unique(lab.array)) == {0, *range(16, 25)}
    np.testing.assert_allclose(lab.spacing, (1.0, 1.0, 2.0), atol=1e-3)  # header says 2.0003
    assert lab.orientation() == "PIR"


def test_real_label_maps_match_their_images():
    img = read_image(shared_sample("tptbox_samples/sub-mri_label-6_T2w.nii.gz"))
    seg = read_labels(shared_sample("tptbox_samples/sub-mri_seg-vert_label-6_msk.nii.gz"))
    check_same_geometry(seg, img, "seg", "img")
    assert {5, 6, 7, 105, 106} <= set(np.unique(seg.array))
