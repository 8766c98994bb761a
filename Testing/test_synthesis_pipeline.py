import numpy as np
import pytest
import torch

from SpineSynthSegLib.bench import voronoi_labels
from SpineSynthSegLib.labels import LabelEntry, LabelTable
from SpineSynthSegLib.synthesis.pipeline import LabelBatch, SynthesisConfig, SynthesisPipeline
from SpineSynthSegLib.synthesis.sampling import Fixed, make_generator

SHAPE = (40, 36, 20)
OFF = {"bias": False, "gamma": False, "resolution": False, "noise": False, "std": (0.0, 0.0)}


@pytest.fixture(scope="module")
def batch() -> LabelBatch:
    lab = voronoi_labels(SHAPE, 8, seed=1) * 3 + 5  # non-contiguous generation ids
    tissues = ["fat", "muscle", "csf", "marrow", "cortical_bone", "nucleus", "annulus", "air"]
    table = LabelTable(tuple(LabelEntry(5 + 3 * k, f"l{k}", tissues[k], target=(20 + k if k < 4 else 0)) for k in range(8)))
    single = LabelBatch.from_array(lab, table, (1.0, 1.2, 2.0))
    return LabelBatch.stack([single, single])


@pytest.mark.parametrize("mode", ["random", "physics", "mixed"])
def test_shapes_range_and_determinism(batch, mode):
    pipe = SynthesisPipeline(SynthesisConfig(mode=mode))
    a = pipe(batch, make_generator(3))
    b = pipe(batch, make_generator(3))
    c = pipe(batch, make_generator(4))
    assert a.image.shape == (2, 1, *SHAPE) and a.image.dtype == torch.float32
    assert a.target.shape == (2, 1, *SHAPE) and a.target.dtype == torch.long
    assert 0 <= a.image.min() and a.image.max() <= 1 and torch.isfinite(a.image).all()
    assert torch.equal(a.image, b.image) and torch.equal(a.target, b.target)
    assert not torch.equal(a.image, c.image)
    assert not torch.allclose(a.image[0], a.image[1])  # two samples, two contrasts


def test_targets_follow_the_deformed_labels(batch):
    out = SynthesisPipeline(SynthesisConfig())(batch, make_generator(0))
    expected = torch.gather(batch.targets, 1, out.labels.flatten(1)).view(out.labels.shape)
    assert torch.equal(out.target, expected)
    assert set(out.target.unique().tolist()) <= {0, 20, 21, 22, 23}


def test_image_aligned_with_labels_after_deformation(batch):
    # Without noise-like stages each label is one intensity: the image must be a function of the
    # deformed label map, i.e. image and labels went through the same grid.
    out = SynthesisPipeline(SynthesisConfig(**OFF))(batch, make_generator(1))
    for b in range(2):
        for lab in out.labels[b].unique():
            values = out.image[b][out.labels[b] == lab]
            assert values.max() - values.min() < 1e-5


def test_forward_is_deform_then_render(batch):
    pipe = SynthesisPipeline(SynthesisConfig(mode="mixed"))
    whole = pipe(batch, make_generator(5), out_shape=(32, 32, 16))
    gen = make_generator(5)
    labels, _ = pipe.deform(batch, gen, out_shape=(32, 32, 16))
    parts = pipe.render(LabelBatch(labels, batch.tissues, batch.targets, batch.spacing), gen)
    assert torch.equal(whole.image, parts.image) and torch.equal(whole.target, parts.target)


def test_maps_of_different_shapes_and_label_counts_render_together(batch):
    # two maps of different shapes and tables, deformed to one patch and rendered in one call:
    # each sample keeps its own targets and its image is still a function of its own labels
    small = np.full((30, 44, 24), 2)
    small[:6], small[:, :6] = 0, 1
    table = LabelTable(tuple(LabelEntry(k, f"s{k}", "muscle", target=(120 if k == 2 else 0)) for k in range(3)))
    other = LabelBatch.from_array(small, table, batch.spacing)
    pipe = SynthesisPipeline(SynthesisConfig(**OFF))
    gen = make_generator(6)
    patches = []
    for source in (LabelBatch(batch.labels[:1], batch.tissues[:1], batch.targets[:1], batch.spacing), other):
        labels, _ = pipe.deform(source, gen, out_shape=(24, 24, 16))
        patches.append(LabelBatch(labels, source.tissues, source.targets, source.spacing))
    stacked = LabelBatch.stack(patches)
    assert stacked.tissues.shape == (2, 8)  # the smaller table padded
    out = pipe.render(stacked, gen)
    assert out.image.shape == (2, 1, 24, 24, 16)
    assert set(out.target[0].unique().tolist()) <= {0, 20, 21, 22, 23}
    assert set(out.target[1].unique().tolist()) <= {0, 120} and (out.target[1] == 120).any()
    for b in range(2):
        for lab in out.labels[b].unique():
            values = out.image[b][out.labels[b] == lab]
            assert values.max() - values.min() < 1e-5


def test_flip_consistency(batch):
    base = dict(OFF, scale=1.0, rotation_deg=(0.0, 0.0), shear=(0.0, 0.0), translation_mm=(0.0, 0.0), elastic_std_mm=(0.0, 0.0))
    plain = SynthesisPipeline(SynthesisConfig(**base, flip_prob=(0.0, 0.0, 0.0)))(batch, make_generator(2))
    flipped = SynthesisPipeline(SynthesisConfig(**base, flip_prob=(1.0, 0.0, 0.0)))(batch, make_generator(2))
    assert torch.allclose(flipped.image, plain.image.flip(2), atol=1e-5)
    assert torch.equal(flipped.target, plain.target.flip(2))


def test_crop_and_errors(batch):
    out = SynthesisPipeline(SynthesisConfig())(batch, make_generator(0), out_shape=(16, 16, 8))
    assert out.image.shape == (2, 1, 16, 16, 8)
    with pytest.raises(ValueError, match="deform"):
        SynthesisPipeline(SynthesisConfig(deform=False))(batch, make_generator(0), out_shape=(16, 16, 8))
    with pytest.raises(ValueError, match="mode"):
        SynthesisConfig(mode="cartoon")
    with pytest.raises(ValueError, match="unknown synthesis parameters"):
        SynthesisConfig.from_dict({"rotaton_deg": [0, 1]})
    with pytest.raises(ValueError, match="rotation"):
        SynthesisPipeline(SynthesisConfig(rotation_deg=(10.0, -10.0)))


def test_config_round_trip():
    cfg = SynthesisConfig(mode="mixed", slice_thickness_mm=(2.0, 6.0))
    assert SynthesisConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(mode="physics").mode == "physics"


def test_physics_mode_uses_tissues(batch):
    # Spin-echo T2-weighted at 1.5 T with all artefacts off: CSF (label 2) brighter than muscle (1).
    cfg = SynthesisConfig(mode="physics", deform=False, **OFF, field_strengths=(1.5,), sequence_weights=(1.0, 0.0, 0.0, 0.0))
    pipe = SynthesisPipeline(cfg)
    pipe.physics.se_tr, pipe.physics.se_te = Fixed(4000.0), Fixed(100.0)  # T2-weighted timing
    out = pipe(batch, make_generator(0))
    lab = batch.labels[0, 0]
    img = out.image[0, 0]
    assert img[lab == 2].mean() > img[lab == 1].mean() + 0.2


def test_label_batch_validation():
    lab = np.array([[[0, 1], [2, 9]]])
    with pytest.raises(ValueError, match="not described"):
        LabelBatch.from_array(lab, LabelTable.for_labels(np.array([0, 1, 2])), (1, 1, 1))
    a = LabelBatch.from_array(np.zeros((2, 2, 2), int), LabelTable.for_labels(np.zeros(1, int)), (1, 1, 1))
    b = LabelBatch.from_array(np.zeros((2, 2, 3), int), LabelTable.for_labels(np.zeros(1, int)), (1, 1, 1))
    with pytest.raises(ValueError, match="one shape"):
        LabelBatch.stack([a, b])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda(batch):
    out = SynthesisPipeline(SynthesisConfig(mode="mixed"))(batch.to("cuda"), make_generator(0, "cuda"))
    assert out.image.device.type == "cuda"


def test_slab_labels_follow_the_simulated_slices(batch):
    thick = {"resolution_prob": 1.0, "slice_thickness_mm": (4.0, 4.0), "slice_axis_weights": (1.0, 0.0, 0.0)}
    anatomy = SynthesisPipeline(SynthesisConfig(**thick))(batch, make_generator(2))
    slabs = SynthesisPipeline(SynthesisConfig(**thick, slab_label_fraction=0.3))(batch, make_generator(2))
    assert torch.equal(anatomy.image, slabs.image)  # only the targets change, and no random draw
    assert not torch.equal(anatomy.target, slabs.target)
    assert set(slabs.target.unique().tolist()) <= {0, 20, 21, 22, 23}
    centres = torch.floor(torch.arange(SHAPE[0]) / 4.0 + 0.5)  # 4 mm slices on the 1 mm axis 0
    for c in centres.unique():
        rows = slabs.target[:, :, centres == c]
        assert (rows == rows[:, :, :1]).all()
    with pytest.raises(ValueError, match="slab_label_fraction"):
        SynthesisConfig(slab_label_fraction=1.5)
