"""Tests of SpineSynthSegLib.inference and SpineSynthSegLib.segment_files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from SpineSynthSegLib import grid_argmax, inference
from SpineSynthSegLib.errors import InputError
from SpineSynthSegLib.grid_argmax import argmax_on_grid, probabilities_on_grid
from SpineSynthSegLib.inference import (
    InferenceConfig,
    Segmenter,
    postprocess,
    predict_probabilities,
    preprocess,
    resolve_amp,
    segment_volume,
)
from SpineSynthSegLib.io import Volume, read_image, read_volume, reorient, write_volume
from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network, load_checkpoint, save_checkpoint
from SpineSynthSegLib.segment_files import exit_code, run_segment
from SpineSynthSegLib.segment_inputs import case_name, expand_inputs, shard, unique_case_names

CPU = InferenceConfig(device="cpu")


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# Columns: LPS unit vectors of the array axes.
_IPR = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]).T
DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "IPR": _IPR,
    "oblique": _rotation(0, 17.0) @ _rotation(2, -23.0) @ _IPR,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, torch.nn.Module, ModelMeta]:
    """A tiny random BasicUNet checkpoint (path, network, metadata)."""
    torch.manual_seed(0)
    meta = ModelMeta(model=ModelConfig(features=(4, 4, 8, 8, 16, 4)), spacing=(2.0, 2.0, 2.0), patch_size=(16, 32, 32))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, build_network(meta.model), meta)
    net, meta = load_checkpoint(path)
    return path, net, meta


class Threshold(torch.nn.Module):
    """A 'cheating' network: class 1 where the normalised intensity is > 0.5, else background."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = 20.0 * (x - 0.5)
        return torch.cat([torch.zeros_like(x), logit, torch.full_like(x, -20.0)], dim=1)


def _box_image(direction: np.ndarray, shape=(40, 36, 14), spacing=(1.2, 1.5, 3.0), boxes=((6, 20, 8, 22, 3, 8),)):
    arr = np.full(shape, 0.1, np.float32)
    truth = np.zeros(shape, bool)
    for x0, x1, y0, y1, z0, z1 in boxes:
        truth[x0:x1, y0:y1, z0:z1] = True
    arr[truth] = 1.0
    return Volume(arr, spacing, (12.5, -40.0, 7.25), direction), truth


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs",
    [{"overlap": 1.0}, {"overlap": -0.1}, {"overlap": (0.5, 0.5)}, {"overlap": [0.5, 1.0, 0.5]}, {"sw_batch_size": 0}, {"blend": "max"}, {"device": "gpu"},
     {"amp": "int8"}, {"min_component_mm3": -1}, {"max_lateral_mm": 0}, {"tta_flip": 1}],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises((ValueError, TypeError)):
        InferenceConfig(**kwargs)


def test_amp_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp("fp32", cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16
    assert resolve_amp("auto", cpu) in (None, torch.bfloat16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_request_without_cuda_is_an_error():
    with pytest.raises(ValueError, match="CUDA"):
        inference.resolve_device("cuda")


# ----------------------------------------------------------------------------- geometry


def test_preprocess_shapes(tiny):
    _, _, meta = tiny
    vol, _ = _box_image(DIRECTIONS["IPR"], shape=(20, 10, 6), spacing=(1.0, 2.0, 3.0))
    x, ctx = preprocess(vol, meta)
    assert x.dtype == torch.float32 and x.shape[:2] == (1, 1)
    assert all(s >= p for s, p in zip(x.shape[2:], meta.patch_size))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert ctx.net_grid.spacing == meta.spacing
    # RAS grid of an IPR image: the sizes of array axes (2, 1, 0), i.e. (6, 10, 20)
    assert ctx.ras_grid.shape == (6, 10, 20)


@pytest.mark.parametrize("orientation", sorted(DIRECTIONS))
def test_geometry_round_trip(tiny, orientation, tmp_path):
    _, net, meta = tiny
    rng = np.random.default_rng(1)
    arr = rng.random((23, 31, 11)).astype(np.float32)
    vol = Volume(arr, (0.9, 1.3, 3.2), (-11.5, 20.25, 3.0), DIRECTIONS[orientation])
    seg = segment_volume(vol, net, meta, CPU).semantic
    assert seg.shape == vol.shape and seg.array.dtype == np.uint8
    assert seg.spacing == vol.spacing and seg.origin == vol.origin
    assert np.array_equal(seg.direction, vol.direction)
    assert set(np.unique(seg.array)) <= {0, 1, 2}
    back = read_volume(write_volume(seg, tmp_path / "seg.nii.gz"))
    assert back.geometry_mismatch(vol) == []


def _smooth_probs(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = torch.nn.functional.avg_pool3d(torch.as_tensor(rng.normal(size=(1, 3, *shape)), dtype=torch.float32),
                                            5, stride=1, padding=2)[0]
    return torch.softmax(4 * logits, dim=0).numpy()


def test_probabilities_on_grid_agree_with_argmax_on_grid():
    source = Volume(np.zeros((20, 24, 28), np.uint8), (1.5, 1.5, 1.5), (3.0, -2.0, 1.0), np.diag([-1.0, -1.0, 1.0]))
    target_ras = Volume(np.zeros((29, 35, 41), np.uint8), (1.0, 1.0, 1.0), (3.2, -2.1, 1.3), np.diag([-1.0, -1.0, 1.0]))
    target, _ = reorient(target_ras, "IPR")  # another axis order and signs, as the validation images have
    probs = _smooth_probs(source.shape)
    sampled = probabilities_on_grid(torch.as_tensor(probs), source, target, chunk_voxels=3000)
    assert sampled.shape == (3, *target.shape)
    assert np.allclose(sampled.sum(0), 1.0, atol=1e-5)
    expected = argmax_on_grid(torch.as_tensor(probs), source, target)
    assert (sampled.argmax(0) == expected).mean() > 0.999  # ties aside, the product's own mapping


def test_probabilities_on_the_same_grid_are_unchanged():
    grid = Volume(np.zeros((12, 10, 14), np.uint8), (2.0, 1.0, 1.5), (0.0, 0.0, 0.0), np.eye(3))
    probs = _smooth_probs(grid.shape, seed=1)
    assert np.allclose(probabilities_on_grid(torch.as_tensor(probs), grid, grid), probs, atol=1e-5)


def test_argmax_on_grid_is_exact_in_world_space():
    """A probability linear in world position, resampled onto a rotated grid: the plane stays put."""
    source = Volume(np.zeros((30, 28, 26), np.uint8), (2.0, 1.5, 2.5), (-20.0, -15.0, -30.0), _rotation(1, 10.0))
    centre = source.affine[:3] @ np.r_[(np.asarray(source.shape) - 1) / 2, 1.0]
    shape, spacing, direction = np.array([41, 37, 19]), np.array([0.9, 1.1, 2.0]), DIRECTIONS["oblique"]
    origin = centre - direction @ ((shape - 1) * spacing / 2)
    target = Volume(np.zeros(tuple(shape), np.uint8), tuple(spacing), tuple(origin), direction)
    normal = np.array([0.6, -0.48, 0.64])
    offset = float(normal @ centre) + 1.7

    def signed(grid: Volume) -> np.ndarray:
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in grid.shape], indexing="ij"), -1).reshape(-1, 3)
        world = idx @ (grid.direction * np.asarray(grid.spacing)).T + np.asarray(grid.origin)
        return (world @ normal - offset).reshape(grid.shape)

    f = torch.from_numpy(signed(source) / 100.0).float()
    probs = torch.stack([0.5 - f, 0.5 + f])
    labels = argmax_on_grid(probs, source, target, chunk_voxels=5000)
    expected = signed(target) > 0
    clear = np.abs(signed(target)) > 1e-3
    assert clear.mean() > 0.95 and 0.1 < expected.mean() < 0.9
    assert np.array_equal(labels[clear] == 1, expected[clear])


@pytest.mark.parametrize("orientation", ["oblique", "IPR"])
def test_cheating_network_lands_in_the_right_place(orientation):
    vol, truth = _box_image(DIRECTIONS[orientation])
    meta = ModelMeta(spacing=(2.0, 2.0, 2.0), patch_size=(16, 32, 32))
    seg = segment_volume(vol, Threshold(), meta, CPU).semantic.array
    full = np.ones((3, 3, 3), bool)
    assert not (seg == 2).any()
    assert (seg == 1)[ndimage.binary_erosion(truth, full)].all(), "box interior missed"
    assert not (seg == 1)[~ndimage.binary_dilation(truth, full)].any(), "label outside the box"
    dice = 2 * ((seg == 1) & truth).sum() / ((seg == 1).sum() + truth.sum())
    assert dice > 0.85


def test_flip_tta_same_result_with_an_equivariant_network():
    vol, _ = _box_image(DIRECTIONS["RAS"], boxes=((12, 28, 8, 22, 3, 8),))
    assert np.array_equal(vol.array, vol.array[::-1])
    meta = ModelMeta(spacing=(2.0, 2.0, 2.0), patch_size=(16, 32, 32))
    plain = segment_volume(vol, Threshold(), meta, CPU).semantic.array
    tta = segment_volume(vol, Threshold(), meta, InferenceConfig(device="cpu", tta_flip=True)).semantic.array
    assert np.array_equal(plain, tta) and (plain == 1).any()


def test_flip_tta_symmetric_input_gives_symmetric_output(tiny):
    _, net, meta = tiny
    rng = np.random.default_rng(3)
    half = rng.random((12, 20, 12)).astype(np.float32)
    arr = np.concatenate([half, half[::-1]], axis=0)  # RAS axis 0 (left-right) symmetric
    vol = Volume(arr, (2.0, 2.0, 2.0), (0.0, 0.0, 0.0), DIRECTIONS["RAS"])
    config = InferenceConfig(device="cpu", tta_flip=True, min_component_mm3=0, max_lateral_mm=None)
    x, _ = preprocess(vol, meta, config)
    probs = predict_probabilities(net, x, meta, config)
    torch.testing.assert_close(probs, probs.flip(2))
    ras = segment_volume(vol, net, meta, config).semantic.array[::-1, ::-1]  # LPS -> RAS array
    assert np.mean(ras != ras[::-1]) < 1e-3


# ----------------------------------------------------------------------------- post-processing


def test_small_and_lateral_components_removed():
    grid = Volume(np.zeros((120, 60, 60), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), DIRECTIONS["RAS"])
    labels = np.zeros(grid.shape, np.uint8)
    labels[55:65, 10:20, 10:20] = 1  # 1000 mm^3 body
    labels[55:65, 10:20, 30:40] = 1  # another body
    labels[55:60, 40:45, 40:45] = 1  # 125 mm^3: too small
    labels[55:65, 10:20, 22:28] = 2  # 600 mm^3 disc, midline
    labels[2:12, 30:40, 10:20] = 1  # a large body 53 mm to the side
    labels[110:118, 30:40, 30:40] = 2  # 800 mm^3 disc 53 mm to the other side
    out, report = postprocess(labels.copy(), grid, InferenceConfig())
    assert out[55:65, 10:20, 10:20].all() and out[55:65, 10:20, 30:40].all() and (out[55:65, 10:20, 22:28] == 2).all()
    assert not out[55:60, 40:45, 40:45].any()
    assert not out[2:12].any() and not out[110:].any()
    assert report["vertebral_body"]["small"] == 1 and report["vertebral_body"]["lateral"] == 1
    assert report["disc"]["lateral"] == 1
    kept, _ = postprocess(labels.copy(), grid, InferenceConfig(min_component_mm3=0, max_lateral_mm=None))
    assert np.array_equal(kept, labels)


def test_small_component_removed_end_to_end():
    boxes = ((6, 20, 8, 22, 3, 8), (30, 35, 26, 31, 9, 11))  # big box, and 6 x 7.5 x 6 mm = 270 mm^3
    vol, _ = _box_image(DIRECTIONS["oblique"], boxes=boxes)
    meta = ModelMeta(spacing=(2.0, 2.0, 2.0), patch_size=(16, 32, 32))
    cleaned = segment_volume(vol, Threshold(), meta, CPU)
    raw_config = InferenceConfig(device="cpu", min_component_mm3=0, max_lateral_mm=None)
    raw = segment_volume(vol, Threshold(), meta, raw_config)
    assert raw.semantic.array[30:35, 26:31, 9:11].any()
    assert not cleaned.semantic.array[30:35, 26:31, 9:11].any()
    assert cleaned.semantic.array[8:18, 10:20, 4:7].all()
    assert cleaned.postprocess["vertebral_body"]["small"] == 1
    assert set(cleaned.timings) == {"preprocess", "network", "postprocess", "total"}


def test_keep_probabilities(tiny):
    _, net, meta = tiny
    vol, _ = _box_image(DIRECTIONS["LPS"])
    res = Segmenter(net, meta, CPU)(vol, keep_probabilities=True)
    assert res.probabilities.shape == (3, *res.probability_grid.shape)
    np.testing.assert_allclose(res.probabilities.sum(0), 1.0, atol=1e-4)


# ----------------------------------------------------------------------------- batch runner helpers


def test_shard():
    items = list(range(10))
    assert shard(items, "2/3") == [1, 4, 7]
    assert shard(items, "1/1") == items
    assert sorted(x for i in range(1, 5) for x in shard(items, f"{i}/4")) == items
    for bad in ("0/3", "4/3", "x", "1/0", "3", "", "a/b", "-1/3"):
        with pytest.raises(InputError):
            shard(items, bad)


def test_case_names(tmp_path):
    assert case_name("x/sub-01_T2w.nii.gz") == "sub-01_T2w"
    assert case_name("a.b.nrrd") == "a.b" and case_name("c.mha") == "c" and case_name("d.nii") == "d"
    (tmp_path / "series_7").mkdir()
    assert case_name(tmp_path / "series_7") == "series_7"
    names = unique_case_names([Path("/p/a/scan.nii.gz"), Path("/p/b/scan.nii.gz"), Path("/p/c/other.nrrd")])
    assert names == ["a_scan", "b_scan", "other"]
    # one at the root, two in one folder (folder names cannot tell those apart: a counter)
    names = unique_case_names([Path("/p/scan.nii.gz"), Path("/p/scan.nrrd"), Path("/scan.mha"), Path("/x/p/scan.nii")])
    assert names == ["p_scan", "p_scan_2", "scan", "x_p_scan"]
    assert unique_case_names([Path("/p/scan.nii.gz"), Path("/p/scan.nrrd")]) == ["scan", "scan_2"]
    assert not any(os.sep in n or n.startswith(".") for n in names)


def _touch(path: Path, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_expand_inputs_folder_and_glob(tmp_path):
    d = tmp_path / "in"
    a = _touch(d / "a.nii.gz")
    b = _touch(d / "sub" / "b.nrrd")
    dicom = _touch(d / "dicom" / "IM0001.dcm").parent
    _touch(d / "notes.txt")
    _touch(d / ".hidden.nii.gz")
    _touch(d / "a_semantic.nii.gz")
    assert expand_inputs([d]) == [a, dicom, b]
    assert expand_inputs([str(d / "*.nii.gz")]) == [a]
    assert expand_inputs([a, str(d / "**" / "*.nrrd"), str(d / "*.nii.gz")]) == [a, b]
    missing = tmp_path / "missing.nii.gz"
    assert expand_inputs([missing]) == [missing]  # fails later, as its own case
    with pytest.raises(InputError):
        expand_inputs([str(tmp_path / "nothing*.nii.gz")])


# ----------------------------------------------------------------------------- batch runner


@pytest.fixture
def batch(tmp_path) -> Path:
    """Two good images (NIfTI, NRRD) and a corrupt NIfTI in one folder."""
    d = tmp_path / "inputs"
    d.mkdir()
    vol, _ = _box_image(DIRECTIONS["oblique"], shape=(20, 24, 8))
    write_volume(vol, d / "good1.nii.gz")
    write_volume(vol.with_array(vol.array[::-1].copy()), d / "good2.nrrd")
    good = (d / "good1.nii.gz").read_bytes()
    (d / "broken.nii.gz").write_bytes(good[: len(good) // 2])
    return d


def _files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_batch_with_a_corrupt_file(tiny, batch, tmp_path):
    out = tmp_path / "out"
    results = run_segment([batch], out, model_path=tiny[0], config=CPU, progress=False, instances=None)
    assert [r.case for r in results] == ["broken", "good1", "good2"]
    assert [r.status for r in results] == ["failed", "ok", "ok"]
    assert "broken.nii.gz" in results[0].error and results[0].bad_input
    assert _files(out) == ["good1_semantic.nii.gz", "good2_semantic.nii.gz"]  # no partial/temp files
    assert exit_code(results) == 2
    seg = read_volume(out / "good1_semantic.nii.gz")
    assert seg.geometry_mismatch(read_image(batch / "good1.nii.gz")) == []
    none = run_segment([batch / "broken.nii.gz"], tmp_path / "none", model_path=tiny[0], config=CPU, progress=False)
    assert exit_code(none) == 2 and not (tmp_path / "none").exists()  # nothing written, no empty folder


def test_batch_instances_and_partial_failure(tiny, batch, tmp_path):
    def fake_levels(semantic: Volume):
        if semantic.shape[0] == 20 and semantic.array[::-1].any() and fake_levels.calls == 1:
            fake_levels.calls += 1
            raise RuntimeError("level assignment exploded")
        fake_levels.calls += 1
        return semantic.with_array(semantic.array * np.uint8(20)), {"levels": ["L1"], "confidence": np.float64(0.9)}

    fake_levels.calls = 0
    out = tmp_path / "out"
    results = run_segment([batch / "good1.nii.gz", batch / "good2.nrrd"], out, model_path=tiny[0], config=CPU,
                          progress=False, instances=fake_levels)
    assert results[0].status == "ok" and results[1].status == "failed"
    assert "exploded" in results[1].error and "good2.nrrd" in results[1].error
    assert exit_code(results) == 1
    assert _files(out) == ["good1_instances.nii.gz", "good1_levels.json", "good1_semantic.nii.gz"]
    written = json.loads((out / "good1_levels.json").read_text())
    assert written["confidence"] == 0.9 and set(written["removed_components"]) <= {"vertebral_body", "disc"}


def test_same_stem_twice_in_one_folder_writes_both_into_the_output_folder(tiny, batch, tmp_path):
    shutil.copy(batch / "good2.nrrd", batch / "good1.nrrd")
    out = tmp_path / "out"
    results = run_segment([batch / "good1.nii.gz", batch / "good1.nrrd"], out, model_path=tiny[0], config=CPU,
                          progress=False, instances=None)
    assert [r.case for r in results] == ["good1", "good1_2"] and exit_code(results) == 0
    assert _files(out) == ["good1_2_semantic.nii.gz", "good1_semantic.nii.gz"]


def test_no_overwrite_without_permission(tiny, batch, tmp_path):
    out = tmp_path / "out"
    inputs = [batch / "good1.nii.gz"]
    run_segment(inputs, out, model_path=tiny[0], config=CPU, progress=False, instances=None)
    target = out / "good1_semantic.nii.gz"
    target.write_bytes(b"precious")
    again = run_segment(inputs, out, model_path=tiny[0], config=CPU, progress=False, instances=None)
    assert again[0].status == "failed" and str(target) in again[0].error and "--overwrite" in again[0].error
    assert target.read_bytes() == b"precious"
    assert exit_code(again) == 2
    replaced = run_segment(inputs, out, model_path=tiny[0], config=CPU, overwrite=True, progress=False, instances=None)
    assert replaced[0].status == "ok"
    assert read_volume(target).shape == (20, 24, 8)


def test_shard_in_batch(tiny, batch, tmp_path):
    out = tmp_path / "out"
    results = run_segment([batch], out, model_path=tiny[0], config=CPU, shard="2/3", progress=True, instances=None)
    assert [r.case for r in results] == ["good1"]
    with pytest.raises(InputError):
        run_segment([batch], out, model_path=tiny[0], config=CPU, shard="4/3", progress=False, instances=None)


def test_seg_nrrd_output(tiny, batch, tmp_path):
    out = tmp_path / "out"
    results = run_segment([batch / "good1.nii.gz"], out, model_path=tiny[0], config=CPU, output_format="seg.nrrd",
                          progress=False, instances=None)
    assert results[0].status == "ok"
    path = out / "good1_semantic.seg.nrrd"
    img = sitk.ReadImage(str(path))
    keys = set(img.GetMetaDataKeys())
    assert {"Segment0_Name", "Segment0_LabelValue", "Segment0_Layer", "Segmentation_MasterRepresentation"} <= keys
    labels = {int(img.GetMetaData(f"Segment{n}_LabelValue")) for n in range(3) if f"Segment{n}_LabelValue" in keys}
    assert labels == set(np.unique(sitk.GetArrayFromImage(img))) - {0}
    assert read_volume(path).geometry_mismatch(read_image(batch / "good1.nii.gz")) == []
    with pytest.raises(InputError):
        run_segment([batch], out, model_path=tiny[0], output_format="png", progress=False, instances=None)


def test_missing_default_model(batch, tmp_path, monkeypatch):
    monkeypatch.setattr(inference, "DEFAULT_MODEL", tmp_path / "models" / "default.pt")
    with pytest.raises(InputError, match="model"):
        run_segment([batch], tmp_path / "out", progress=False, instances=None)


def test_overlap_one_value_or_one_per_axis():
    assert InferenceConfig().overlaps == (0.5, 0.5, 0.5)
    assert InferenceConfig(overlap=[0.25]).overlap == 0.25  # a command line's single value
    per_axis = InferenceConfig(overlap=[0.25, 0.5, 0.5])
    assert per_axis.overlap == (0.25, 0.5, 0.5) and per_axis.overlaps == (0.25, 0.5, 0.5)


def test_dicom_folder_input(tiny, shared_data, tmp_path):
    samples = shared_data / "samples" / "totalsegmentator_tests"
    dicom = samples / "example_ct_dicom"
    if not dicom.is_dir():
        pytest.skip("DICOM sample not available")
    assert dicom in expand_inputs([samples])
    out = tmp_path / "out"
    config = InferenceConfig(device="cpu", overlap=0.0)
    results = run_segment([dicom], out, model_path=tiny[0], config=config, progress=False, instances=None)
    assert results[0].status == "ok", results[0].error
    seg = read_volume(out / "example_ct_dicom_semantic.nii.gz")
    assert seg.geometry_mismatch(read_image(dicom)) == []


@pytest.mark.parametrize("spacing", [(0.7, 1.3, 3.1), (2.0, 2.0, 2.0), (4.0, 0.5, 1.0)])
def test_separable_resampling_matches_grid_sample(spacing):
    """The fast axis-aligned path gives the same labels as the general trilinear path."""
    torch.manual_seed(0)
    target = Volume(np.zeros((33, 21, 9), np.uint8), spacing, (3.0, -2.0, 1.0), DIRECTIONS["IPR"])
    source = inference.grid_for_spacing(target, (2.0, 1.5, 1.5))
    probs = torch.softmax(3 * torch.randn(3, *source.shape), 0)
    m = np.linalg.inv(source.affine) @ target.affine
    fast = argmax_on_grid(probs, source, target, chunk_voxels=500)
    general = grid_argmax._argmax_grid_sample(probs, m, target.shape, 1 << 20)
    assert np.mean(fast != general) < 1e-3


def test_single_slice_input(tiny):
    _, net, meta = tiny
    arr = np.random.default_rng(5).random((30, 26, 1)).astype(np.float32)
    vol = Volume(arr, (0.8, 0.8, 4.0), (0.0, 0.0, 0.0), DIRECTIONS["oblique"])
    seg = segment_volume(vol, net, meta, CPU).semantic
    assert seg.shape == vol.shape and seg.geometry_mismatch(vol) == []


def test_missing_instances_module_is_tolerated(tiny, batch, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "SpineSynthSegLib.instances", None)  # import raises ImportError
    out = tmp_path / "out"
    results = run_segment([batch / "good1.nii.gz"], out, model_path=tiny[0], config=CPU, progress=False)
    assert results[0].status == "ok"
    assert "level assignment unavailable" in caplog.text
    assert _files(out) == ["good1_semantic.nii.gz"]


def test_unloadable_checkpoint_is_one_short_line_and_bench_refuses_it(tmp_path):
    from SpineSynthSegLib.bench import run_segment_benchmark
    from SpineSynthSegLib.model import hash_path, sha256_file

    path = tmp_path / "text.pt"
    path.write_text("not a checkpoint\n" * 20)
    hash_path(path).write_text(sha256_file(path))  # a matching hash: the content itself is bad
    with pytest.raises(InputError, match="not a loadable checkpoint") as err:
        load_checkpoint(path)
    assert "weights_only=False" not in str(err.value) and "\n" not in str(err.value) and "text.pt" in str(err.value)
    with pytest.raises(InputError, match="text.pt"):  # a model asked for by name: no untrained stand-in
        run_segment_benchmark(model_path=path, repeats=1, device="cpu")


def test_segment_benchmark_counts_the_windows_of_its_overlap(tiny, capsys):
    from SpineSynthSegLib.bench import run_segment_benchmark

    shape = (200, 160, 48)  # RAS on the 2 mm grid: 24 x 80 x 100 voxels against 16 x 32 x 32 windows
    dense = run_segment_benchmark(model_path=tiny[0], shape=shape, repeats=1, device="cpu", overlap=0.5)
    sparse = run_segment_benchmark(model_path=tiny[0], shape=shape, repeats=1, device="cpu", overlap=0.0)
    one_axis = run_segment_benchmark(model_path=tiny[0], shape=shape, repeats=1, device="cpu", overlap=(0.0, 0.0, 0.5))
    assert sparse["windows"] < one_axis["windows"] < dense["windows"]
    assert f"{sparse['windows']} windows" in capsys.readouterr().out
