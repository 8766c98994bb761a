"""Tests of the training label-map preparation (training_data, Training/prepare_labelmaps.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from SpineSynthSegLib import io
from SpineSynthSegLib import source_structures as ss
from SpineSynthSegLib import training_data as td
from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.labels import LabelTable, sidecar_path

IPR = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # LPS columns: axis 0 inferior
RAS = np.diag([-1.0, -1.0, 1.0])  # LPS columns of R, A, S


# ----------------------------------------------------------------------------- random background


@pytest.mark.parametrize("shape,spacing", [((30, 40, 20), (1.5, 1.5, 2.0)), ((17, 33, 9), (1.0, 0.5, 4.0))])
def test_background_shape_labels_and_determinism(shape, spacing):
    a = td.random_background_labels(shape, spacing, k=(4, 10), seed=3)
    assert a.shape == shape and a.dtype == np.int32
    present = np.unique(a)
    assert present[0] == 1 and np.array_equal(present, np.arange(1, present.size + 1)) and present.size <= 10
    assert np.array_equal(a, td.random_background_labels(shape, spacing, k=(4, 10), seed=3))
    assert not np.array_equal(a, td.random_background_labels(shape, spacing, k=(4, 10), seed=4))


def test_background_k_and_smoothness():
    a = td.random_background_labels((40, 80, 80), (2.0, 1.5, 1.5), k=6, seed=0, smoothness_mm=(8, 30))
    assert 4 <= a.max() <= 6
    for axis in range(3):  # neighbouring voxels mostly share their label
        same = np.mean(np.take(a, range(1, a.shape[axis]), axis) == np.take(a, range(a.shape[axis] - 1), axis))
        assert same > 0.85
    rough = td.random_background_labels((40, 80, 80), (2.0, 1.5, 1.5), k=6, seed=0, smoothness_mm=2)
    assert np.mean(rough[1:] == rough[:-1]) < np.mean(a[1:] == a[:-1])


@pytest.mark.parametrize("k,smooth", [(0, 10), ((5, 3), 10), (4, 0), (4, (20, 10))])
def test_background_rejects_bad_ranges(k, smooth):
    with pytest.raises(ValueError):
        td.random_background_labels((8, 8, 8), (1, 1, 1), k=k, smoothness_mm=smooth)


# ----------------------------------------------------------------------------- label-only conversions


def _stack(n: int, axis_len: int = 120) -> np.ndarray:
    """n boxes along axis 2 (bodies of a binary mask), plus one tiny speck."""
    a = np.zeros((20, 40, axis_len), np.uint8)
    for i in range(n):
        a[6:14, 10:20, 5 + 15 * i : 13 + 15 * i] = 1
    a[0, 0, 0] = 1  # 3 mm3: dropped
    return a


@pytest.mark.parametrize("flip", [False, True])
def test_split_binary_bodies_orders_superior_to_inferior(flip):
    direction = RAS.copy()
    if flip:
        direction[:, 2] *= -1  # axis 2 now points inferior
    vol = io.Volume(_stack(7), (2.0, 1.25, 1.25), (0, 0, 0), direction)
    out = ss.split_binary_bodies(vol)
    centres = [np.nonzero(out.array == v)[2].mean() for v in range(18, 25)]  # T11 .. L5
    assert sorted(np.unique(out.array).tolist()) == [0, *range(18, 25)]
    assert centres == sorted(centres, reverse=not flip)  # T11 highest in world S
    assert out.array[0, 0, 0] == 0


def test_split_binary_bodies_count_mismatch_skips(caplog):
    vol = io.Volume(_stack(6), (2.0, 1.25, 1.25), (0, 0, 0), RAS)
    assert ss.split_binary_bodies(vol) is None
    assert "expected 7" in caplog.text
    assert sorted(np.unique(ss.split_binary_bodies(vol, expected=None).array)) == [0, *range(19, 25)]


@pytest.mark.parametrize("values", [(51, 102, 153, 204, 255), (4, 7, 11, 14, 18)])
def test_ivd_native_values(values):
    a = np.zeros((20, 60, 6), np.int32)
    for i, v in enumerate(values):  # value order: L5/S1 ... L1/L2
        a[2:18, 5 + 10 * i : 9 + 10 * i, :] = v
    a[0, 0, 0] = 255 if values[0] != 51 else 0  # a stray voxel of a foreign value
    a[19, 5, 3] = values[1]  # a stray component of a disc
    out = ss.ivd_native_to_discs(a)
    for i, disc in enumerate((124, 123, 122, 121, 120)):
        assert np.all(out[2:18, 5 + 10 * i : 9 + 10 * i] == disc)
    assert out[0, 0, 0] == 0 and out[19, 5, 3] == 0
    with pytest.raises(InputError):
        ss.ivd_native_to_discs(np.where(a == values[0], 0, a))  # only four discs


def test_split_body_at_canal():
    a = np.zeros((40, 40, 12), np.int32)  # RAS: axis 1 anterior
    a[10:30, 22:36, :] = 22  # body
    a[12:28, 8:22, 3:9] = 22  # ring around the canal, behind the body
    a[16:24, 12:20, 3:9] = 0  # the canal
    out = ss.split_body_at_canal(a, (1.0, 1.0, 1.0))
    assert np.all(out[10:30, 22:36] == 22)
    assert np.all(out[12:28, 8:12, 3:9] == ss.POSTERIOR)


def test_compose_keeps_targets():
    s = np.zeros((20, 40, 40), np.int32)
    s[5:15, 10:30, 5:15] = 24
    s[5:15, 10:30, 15:19] = 123
    s[5:15, 0:8, 5:15] = ss.POSTERIOR
    vol, table = td.compose_with_background(io.Volume(s, (2.0, 1.5, 1.5)), np.random.default_rng(0), td.PrepareConfig())
    table.check(vol.array)
    assert 0 not in vol.array
    assert np.array_equal(table.target_map(vol.array), np.where(s == ss.POSTERIOR, 0, s))
    tissues = {e.tissue for e in table.entries if e.target == 24}
    assert tissues == {"cortical_bone", "marrow"}


# ----------------------------------------------------------------------------- end to end


def _fake_shared(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "lumbar_mri/images").mkdir(parents=True)
    (root / "lumbar_mri/labels").mkdir()
    (root / "lumbar_mri/labels_only").mkdir()
    cases = {}
    for case in ("VB3_90", "VB3_02"):  # VB3_02 is a validation case
        lab = np.zeros((60, 50, 24), np.int16)
        lab[10:25, 15:35, 6:18] = 1
        lab[30:45, 15:35, 6:18] = 2
        img = 40 + 20 * rng.random(lab.shape) + 80 * (lab > 0) + 30 * (np.arange(50)[None, :, None] > 40)
        io.write_volume(io.Volume(img.astype(np.float32), (1, 1, 1), (0, 0, 0), IPR), root / f"lumbar_mri/images/{case}_img.nii.gz")
        io.write_volume(io.Volume(lab, (1, 1, 1), (0, 0, 0), IPR), root / f"lumbar_mri/labels/{case}_seg.nii.gz")
        cases[case] = {"labels_superior_to_inferior": [1, 2]}
    (root / "lumbar_mri/cases.json").write_text(json.dumps(cases))
    for stem in ("VB2native_99", "VB2native_05"):  # 05: the subject of validation case VB2_05
        io.write_volume(io.Volume(_stack(7), (2.0, 1.25, 1.25), (0, 0, 0), RAS), root / f"lumbar_mri/labels_only/{stem}_seg.nii.gz")
    return root


def _check_maps(out: Path, spacing) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spacing"] == list(spacing) and tuple(manifest["validation_cases"]) == td.VALIDATION_CASES
    maps = td.load_manifest(out)
    assert maps and len(maps) == len(manifest["maps"])
    for m in maps:
        assert not any(m["name"].startswith(c) for c in td.VALIDATION_CASES) and "native_05" not in m["name"]
        vol = io.read_labels(m["path"])
        table = LabelTable.load(sidecar_path(m["path"]))
        table.check(vol.array)
        assert vol.orientation() == "RAS" and np.allclose(vol.spacing, spacing)
        assert list(vol.shape) == m["shape"] and m["sidecar"] == str(sidecar_path(m["path"]))
        assert sorted(np.unique(table.target_map(vol.array))[1:].tolist()) == m["targets"]
    return maps


def test_prepare_end_to_end(tmp_path):
    shared = _fake_shared(tmp_path / "shared")
    cfg = td.PrepareConfig(spacing=(2.0, 1.5, 1.5), n_maps=2, sources=("real", "vb2native"), k_outside=(2, 4))
    entries = td.prepare_labelmaps(shared, tmp_path / "out", cfg)
    maps = _check_maps(tmp_path / "out", cfg.spacing)
    assert [m["name"] for m in maps] == [e["name"] for e in entries]
    by_source = {s: [m for m in maps if m["source"] == s] for s in ("real", "vb2native")}
    assert [m["name"] for m in by_source["real"]] == ["VB3_90_em0", "VB3_90_em1"]
    assert all(m["targets"] == [23, 24] and m["has_body"] and not m["has_disc"] for m in by_source["real"])
    assert [m["targets"] for m in by_source["vb2native"]] == [list(range(18, 25))] * 2
    # same seed, two workers: identical maps
    td.prepare_labelmaps(shared, tmp_path / "again", td.PrepareConfig(**{**cfg.__dict__, "workers": 2}))
    for m in maps:
        again = io.read_labels(tmp_path / "again" / Path(m["path"]).name)
        assert np.array_equal(io.read_labels(m["path"]).array, again.array)


def test_prepare_phantom_and_errors(tmp_path):
    cfg = td.PrepareConfig(sources=("phantom",), n_phantoms=1)
    (m,) = td.prepare_labelmaps(tmp_path, tmp_path / "out", cfg)
    _check_maps(tmp_path / "out", cfg.spacing)
    assert m["has_body"] and m["has_disc"] and {20, 21, 22, 23, 24, 123}.issubset(m["targets"])
    with pytest.raises(InputError):
        td.prepare_labelmaps(tmp_path / "nothing", tmp_path / "o2", td.PrepareConfig(sources=("real",)))
    with pytest.raises(InputError):
        td.load_manifest(tmp_path / "o2")
    with pytest.raises(ValueError):
        td.PrepareConfig(sources=("mri",))


# ----------------------------------------------------------------------------- real data


def test_real_vb3_case(shared_data, tmp_path):
    cfg = td.PrepareConfig(n_maps=1, sources=("real", "ivdnative"), names=("VB3_03", "IVDnative_01", "VB3_02"))
    assert [j[1] for j in td.list_items(shared_data, cfg)] == ["VB3_03", "IVDnative_01"]  # VB3_02 validates
    td.prepare_labelmaps(shared_data, tmp_path, cfg)
    real, ivd = _check_maps(tmp_path, cfg.spacing)
    assert real["targets"] == [20, 21, 22, 23, 24] and not real["has_disc"]
    assert ivd["targets"] == [120, 121, 122, 123, 124] and ivd["has_disc"] and not ivd["has_body"]
    vol = io.read_labels(ivd["path"])  # RAS: L1/L2 on top, lordosis (L3/L4 anterior of L1/L2-L5/S1 chord)
    targets = LabelTable.load(ivd["sidecar"]).target_map(vol.array)
    c = {d: np.argwhere(targets == d).mean(0) for d in (120, 122, 124)}
    assert c[120][2] > c[122][2] > c[124][2]
    assert c[122][1] > (c[120][1] + c[124][1]) / 2
