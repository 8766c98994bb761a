import numpy as np
import pytest
import torch
from PIL import Image

from SpineSynthSegLib.demo_segment import contrast_image, per_level_dice, segment_phantom_demo
from SpineSynthSegLib.inference import InferenceConfig, Segmenter
from SpineSynthSegLib.model import ModelConfig, ModelMeta, build_network
from SpineSynthSegLib.phantom import PhantomConfig, generate_phantom


def _mean_of(image, vol, table, tissue):
    ids = [e.id for e in table.entries if e.tissue == tissue]
    return image.array[np.isin(vol.array, ids)].mean()


def test_contrasts_look_like_t1_and_t2():
    vol, table = generate_phantom(PhantomConfig(), seed=0)
    t1 = contrast_image(vol, table, "T1w")
    t2 = contrast_image(vol, table, "T2w")
    assert t1.shape == vol.shape and not t1.geometry_mismatch(vol)
    assert _mean_of(t1, vol, table, "fat") > _mean_of(t1, vol, table, "csf")
    assert _mean_of(t2, vol, table, "csf") > _mean_of(t2, vol, table, "marrow")


def test_stir_and_water_images_suppress_fat():
    vol, table = generate_phantom(PhantomConfig(), seed=0)
    stir = contrast_image(vol, table, "STIR")
    water = contrast_image(vol, table, "Dixon_water")
    t1 = contrast_image(vol, table, "T1w")
    assert _mean_of(stir, vol, table, "fat") < 0.3 * _mean_of(stir, vol, table, "csf")
    assert _mean_of(water, vol, table, "fat") < 0.3 * _mean_of(water, vol, table, "nucleus")
    assert _mean_of(t1, vol, table, "fat") > 2 * _mean_of(t1, vol, table, "csf")


def test_unknown_contrast_is_refused():
    vol, table = generate_phantom(PhantomConfig(), seed=0)
    with pytest.raises(ValueError, match="contrast must be one of"):
        contrast_image(vol, table, "FLAIR")


def test_per_level_dice():
    truth = np.zeros((4, 4, 4), int)
    truth[:2], truth[2:] = 22, 123
    pred = truth.copy()
    pred[3] = 0
    assert per_level_dice(pred, truth) == {"L3": 1.0, "L4-L5": round(2 * 16 / (16 + 32), 3)}


def test_segment_phantom_demo_writes_outputs(tmp_path):
    torch.manual_seed(0)
    meta = ModelMeta(model=ModelConfig(features=(4, 4, 8, 8, 8, 4)), spacing=(3.0, 3.0, 3.0), patch_size=(32, 32, 32))
    segmenter = Segmenter(build_network(meta.model).eval(), meta, InferenceConfig(device="cpu"))
    vol, table = generate_phantom(PhantomConfig(shape=(96, 80, 40), spacing=(2.0, 2.0, 2.0)), seed=1)
    summary = segment_phantom_demo(vol, table, tmp_path, segmenter)
    for kind in ("T1w", "T2w"):
        assert 0.0 <= summary[kind]["dice_vertebral_body"] <= 1.0
        assert (tmp_path / f"phantom_{kind}_instances.nii.gz").exists()
    png = Image.open(summary["overlay"])
    assert png.size[1] > png.size[0] / 3  # two rows of three panels


def test_shipped_model_names_the_demo_phantom_levels(tmp_path):
    """The shipped model plus `assign_levels` on the demo's phantom (ends at S1): every level found."""
    vol, table = generate_phantom(PhantomConfig(sacrum_below_s1=False), seed=0)
    summary = segment_phantom_demo(vol, table, tmp_path)
    for kind in ("T1w", "T2w"):
        assert summary[kind]["levels_anchor"] == "sacrum"
        per_level = summary[kind]["per_level_dice"]
        assert len(per_level) == 11 and min(per_level.values()) > 0.6, per_level
