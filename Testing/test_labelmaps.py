"""Tests of the EM label maps (labelmaps.py) on synthetic images and one real VB3 case."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SpineSynthSegLib import io, labelmaps
from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.label_converters import from_reference_case
from SpineSynthSegLib.labelmaps import make_labelmaps, outside_cluster_count, run_make_labelmap, write_labelmaps
from SpineSynthSegLib.labels import LabelTable, sidecar_path

SHAPE = (36, 30, 12)


def _phantom(ramp: bool = False, seed: int = 1) -> tuple[io.Volume, io.Volume]:
    """Three background intensity bands (or a smooth ramp), two vertebrae with a cortex, a disc."""
    rng = np.random.default_rng(seed)
    img = np.zeros(SHAPE, np.float32)
    if ramp:
        img[:] = np.linspace(0, 100, SHAPE[1])[None, :, None]
    else:
        img[:, :10], img[:, 10:20], img[:, 20:] = 10, 50, 90
    lab = np.zeros(SHAPE, np.int32)
    for vid, (x0, x1) in ((20, (4, 14)), (21, (20, 30))):
        lab[x0:x1, 8:22, 2:10] = vid
        img[x0:x1, 8:22, 2:10] = 220  # cortex
        img[x0 + 2 : x1 - 2, 10:20, 4:8] = 150  # marrow
    lab[15:19, 8:22, 2:10] = 120
    img[15:19, 8:22, 2:10] = 180
    img += rng.normal(0, 2, SHAPE).astype(np.float32)
    geometry = {"spacing": (1.0, 1.2, 2.0), "origin": (3.0, -4.0, 5.0)}
    return io.Volume(img, **geometry), io.Volume(lab, **geometry)


def _outside_means(image: io.Volume, gen: np.ndarray, table: LabelTable) -> list[float]:
    ids = [e.id for e in table.entries if e.id and not e.target]
    return [float(image.array[gen == i].mean()) for i in ids]


def test_counts_targets_and_tissues():
    image, labels = _phantom()
    maps = make_labelmaps(image, labels, n_maps=2, k_outside=3, k_inside=2, seed=0)
    assert len(maps) == 2
    for vol, table in maps:
        assert vol.array.dtype == np.int32 and vol.shape == SHAPE and not vol.geometry_mismatch(image)
        assert outside_cluster_count(table) == 3
        np.testing.assert_array_equal(table.target_map(vol.array), labels.array)
        for target in (20, 21, 120):
            entries = [e for e in table.entries if e.target == target]
            assert len(entries) == 2  # cortex + marrow (disc: two noise halves at most)
        assert {e.tissue for e in table.entries if e.target in (20, 21)} == {"marrow"}
        assert {e.tissue for e in table.entries if e.target == 120} == {"nucleus"}
        assert table.entry(0).tissue == "air" and not (vol.array == 0).any()
        assert table.ids == list(range(len(table.ids)))  # consecutive ids
    vol, table = maps[0]
    darker, brighter = sorted((e for e in table.entries if e.target == 20), key=lambda e: e.id)
    # the vertebra clusters separate marrow (150, darker: lower id) from cortex (220)
    assert image.array[vol.array == darker.id].mean() < 170 < image.array[vol.array == brighter.id].mean()


def test_k_varies_within_range_and_outside_sorted():
    image, labels = _phantom(ramp=True)
    maps = make_labelmaps(image, labels, n_maps=4, k_outside=(3, 6), k_inside=(2, 3), seed=3)
    counts = [outside_cluster_count(t) for _, t in maps]
    assert sorted(counts) == [3, 4, 5, 6]
    for vol, table in maps:
        means = _outside_means(image, vol.array, table)
        assert means == sorted(means) and len(set(means)) == len(means)
        for target in (20, 21):
            assert 1 <= sum(e.target == target for e in table.entries) <= 3


def test_deterministic_for_a_seed():
    image, labels = _phantom(ramp=True)
    a = make_labelmaps(image, labels, n_maps=3, seed=7)
    b = make_labelmaps(image, labels, n_maps=3, seed=7)
    for (va, ta), (vb, tb) in zip(a, b):
        np.testing.assert_array_equal(va.array, vb.array)
        assert ta == tb
    c = make_labelmaps(image, labels, n_maps=3, seed=8)
    assert any(not np.array_equal(va.array, vc.array) for (va, _), (vc, _) in zip(a, c))


def test_target_of_and_structure_tissues():
    image, labels = _phantom()
    raw = labels.with_array(np.select([labels.array == 20, labels.array == 21, labels.array == 120], [1, 2, 3]))
    maps = make_labelmaps(
        image,
        raw,
        n_maps=1,
        k_outside=3,
        k_inside=2,
        target_of={1: 20, 2: 21, 3: 120},
        structure_tissues={120: "annulus", 20: "cortical_bone"},
    )
    vol, table = maps[0]
    np.testing.assert_array_equal(table.target_map(vol.array), labels.array)
    assert {e.tissue for e in table.entries if e.target == 120} == {"annulus"}
    assert {e.tissue for e in table.entries if e.target == 20} == {"cortical_bone"}
    assert {e.tissue for e in table.entries if e.target == 21} == {"marrow"}
    assert any(e.name.startswith("L1 cluster") for e in table.entries)
    assert any(e.name.startswith("L1-L2 cluster") for e in table.entries)


def test_validation_errors():
    image, labels = _phantom()
    shifted = io.Volume(labels.array, labels.spacing, (0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="geometry"):
        make_labelmaps(image, shifted)
    with pytest.raises(InputError, match="constant"):
        make_labelmaps(image.with_array(np.full(SHAPE, 5.0, np.float32)), labels)
    with pytest.raises(InputError, match="no structure"):
        make_labelmaps(image, labels.with_array(np.zeros(SHAPE, np.int32)))
    with pytest.raises(InputError, match="k_outside"):
        make_labelmaps(image, labels, k_outside=(5, 3))
    with pytest.raises(InputError, match="k_inside"):
        make_labelmaps(image, labels, k_inside=0)
    with pytest.raises(InputError, match="n_maps"):
        make_labelmaps(image, labels, n_maps=0)


def test_write_round_trip(tmp_path):
    image, labels = _phantom()
    maps = make_labelmaps(image, labels, n_maps=2, k_outside=(3, 4), k_inside=2, seed=0)
    paths = write_labelmaps(maps, tmp_path / "out", "case", provenance={"image": "img.nii.gz", "seed": 0})
    assert len(paths) == 2
    for i, (path, (vol, table)) in enumerate(zip(paths, maps)):
        assert path.name == f"case_k{outside_cluster_count(table)}_{i}.nii.gz"
        back = io.read_labels(path)
        np.testing.assert_array_equal(back.array, vol.array)
        assert not back.geometry_mismatch(image)
        assert LabelTable.load(sidecar_path(path)) == table
        prov = json.loads(sidecar_path(path).read_text())["provenance"]
        assert prov["image"] == "img.nii.gz" and prov["seed"] == 0 and prov["map_index"] == i
        assert prov["k_outside"] == outside_cluster_count(table) and prov["k_inside"]["20"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [p.name for p in paths] + [sidecar_path(p).name for p in paths]
    )


def test_write_failure_leaves_nothing(tmp_path, monkeypatch):
    image, labels = _phantom()
    maps = make_labelmaps(image, labels, n_maps=2, k_outside=3, k_inside=2)
    calls = []

    def failing(data, path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return io.write_bytes_atomic(data, path)

    monkeypatch.setattr(labelmaps, "write_bytes_atomic", failing)
    with pytest.raises(OSError, match="disk full"):
        write_labelmaps(maps, tmp_path, "case")
    assert list(tmp_path.iterdir()) == []


def test_run_make_labelmap(tmp_path):
    image, labels = _phantom()
    io.write_volume(image, tmp_path / "img.nii.gz")
    io.write_volume(labels, tmp_path / "seg.nii.gz")
    paths = run_make_labelmap(tmp_path / "img.nii.gz", tmp_path / "seg.nii.gz", tmp_path / "out", 2, (3, 5), 2, 0)
    assert len(paths) == 2 and all(p.name.startswith("img_k") for p in paths)
    prov = json.loads(sidecar_path(paths[0]).read_text())["provenance"]
    assert prov["labels"].endswith("seg.nii.gz") and prov["k_outside_range"] == [3, 5]
    # instance ids that are not output labels need a conversion: error names the file, writes nothing
    io.write_volume(labels.with_array(np.where(labels.array > 0, labels.array + 30, 0)), tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="bad.nii.gz"):
        run_make_labelmap(tmp_path / "img.nii.gz", tmp_path / "bad.nii.gz", tmp_path / "out2", 2, 3, 2, 0)
    io.write_volume(io.Volume(labels.array), tmp_path / "moved.nii.gz")
    with pytest.raises(InputError, match="moved.nii.gz"):
        run_make_labelmap(tmp_path / "img.nii.gz", tmp_path / "moved.nii.gz", tmp_path / "out3", 2, 3, 2, 0)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


def test_run_make_labelmap_reference_case(tmp_path):
    image, labels = _phantom()
    (tmp_path / "labels").mkdir()
    inst = labels.with_array(np.select([labels.array == 20, labels.array == 21], [2, 1]).astype(np.int32))
    io.write_volume(image, tmp_path / "img.nii.gz")
    io.write_volume(inst, tmp_path / "labels" / "VB3_99_seg.nii.gz")
    (tmp_path / "cases.json").write_text(json.dumps({"VB3_99": {"labels_superior_to_inferior": [2, 1]}}))
    paths = run_make_labelmap(
        tmp_path / "img.nii.gz", tmp_path / "labels" / "VB3_99_seg.nii.gz", tmp_path / "o", 1, 3, 2, 0, "VB3_99"
    )
    table = LabelTable.load(sidecar_path(paths[0]))
    assert table.targets() == [23, 24]  # [2, 1] superior to inferior ending at L5 -> L4, L5
    with pytest.raises(InputError, match="not found"):
        run_make_labelmap(
            tmp_path / "img.nii.gz", tmp_path / "labels" / "VB3_99_seg.nii.gz", tmp_path / "o", 1, 3, 2, 0, "VB3_98"
        )


def test_real_vb3_crop(shared_data, monkeypatch):
    monkeypatch.setattr(labelmaps, "MAX_FIT_VOXELS", 20_000)  # keep the test fast (the subsample path)
    root = shared_data / "lumbar_mri"
    cases = json.loads((root / "cases.json").read_text())
    image = io.read_image(root / "images" / "VB3_02_img.nii.gz")
    labels = io.read_labels(root / "labels" / "VB3_02_seg.nii.gz")
    labels = labels.with_array(from_reference_case(labels.array, "VB3_02", cases))
    mid = image.shape[2] // 2
    crop = (slice(None), slice(None), slice(mid - 4, mid + 4))
    image = io.Volume(np.ascontiguousarray(image.array[crop]), image.spacing, image.origin, image.direction)
    labels = io.Volume(np.ascontiguousarray(labels.array[crop]), labels.spacing, labels.origin, labels.direction)
    maps = make_labelmaps(image, labels, n_maps=2, k_outside=(3, 10), k_inside=(2, 3), seed=0)
    for vol, table in maps:
        np.testing.assert_array_equal(table.target_map(vol.array), labels.array)
        assert 3 <= outside_cluster_count(table) <= 10
        assert table.targets() == [20, 21, 22, 23, 24]
        means = _outside_means(image, vol.array, table)
        assert means == sorted(means)
