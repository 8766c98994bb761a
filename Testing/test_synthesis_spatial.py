import pytest
import torch

from SpineSynthSegLib.synthesis.sampling import make_generator
from SpineSynthSegLib.synthesis.spatial import RandomSpatial, SpatialParams

SPACING = (1.0, 2.0, 3.0)


def _identity(**kw):
    args = {"scale": 1.0, "rotation": 0.0, "shear": 0.0, "translation": 0.0, "elastic_std": 0.0, "flip_prob": (0, 0, 0)}
    args.update(kw)
    return RandomSpatial(**args)


@pytest.mark.parametrize("shape", [(20, 17, 9), (7, 12, 5)])
def test_zero_strength_is_identity(shape):
    x = torch.randn(2, 2, *shape)
    sp = _identity()
    y = sp.apply(x, sp.sample(shape, SPACING, 2, make_generator(0)), SPACING)
    assert torch.allclose(x, y, atol=1e-4)
    labels = torch.randint(0, 9, (2, 1, *shape))
    out = sp.apply(labels, sp.sample(shape, SPACING, 2, make_generator(0)), SPACING, mode="nearest")
    assert torch.equal(out, labels)


def test_flip_and_translation_and_crop():
    x = torch.randn(1, 1, 20, 17, 9)
    sp = _identity(flip_prob=(1, 0, 0))
    y = sp.apply(x, sp.sample(x.shape[2:], SPACING, 1, make_generator(0)), SPACING)
    assert torch.allclose(y, x.flip(2), atol=1e-4)
    shift = SpatialParams(torch.eye(3)[None], torch.tensor([[0.0, 2.0, 0.0]]), None, (20, 17, 9))
    y = sp.apply(x, shift, SPACING)
    assert torch.allclose(y[:, :, :, :-1], x[:, :, :, 1:], atol=1e-4)  # one voxel of 2 mm
    crop = SpatialParams(torch.eye(3)[None], torch.zeros(1, 3), None, (10, 9, 5))
    assert torch.allclose(sp.apply(x, crop, SPACING), x[:, :, 5:15, 4:13, 2:7], atol=1e-5)


def test_rotation_is_rigid_in_mm_on_anisotropic_voxels():
    # A ball in mm stays a ball of the same volume after a 90 degree rotation.
    spacing = (1.0, 1.0, 2.0)
    shape = (41, 41, 21)
    idx = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1).float()
    centre = (torch.tensor(shape).float() - 1) / 2
    mm = (idx - centre) * torch.tensor(spacing)
    ball = ((mm**2).sum(-1) < 12**2).long()[None, None]
    sp = RandomSpatial(scale=1.0, rotation=(90.0, 90.0), shear=0.0, translation=0.0, elastic_std=0.0, flip_prob=(0, 0, 0))
    out = sp.apply(ball, sp.sample(shape, spacing, 1, make_generator(0)), spacing, mode="nearest")
    assert abs(out.sum().item() - ball.sum().item()) / ball.sum().item() < 0.05


def test_image_and_labels_share_one_deformation():
    # An image that equals its label map stays equal to it after the same random deformation.
    g = make_generator(3)
    shape = (24, 20, 16)
    labels = (torch.rand(1, 1, 6, 5, 4, generator=g) * 5).long()
    labels = torch.nn.functional.interpolate(labels.float(), size=shape, mode="nearest").long()
    sp = RandomSpatial(elastic_std=(3.0, 3.0))
    params = sp.sample(shape, SPACING, 1, make_generator(5))
    lab = sp.apply(labels, params, SPACING, mode="nearest")
    img = sp.apply(labels.float(), params, SPACING, mode="nearest")
    assert torch.equal(lab.float(), img)
    assert not torch.equal(lab, labels)  # it did deform
    assert set(lab.unique().tolist()) <= set(labels.unique().tolist())


def test_same_seed_same_output_and_batch_independence():
    x = torch.randn(3, 1, 16, 16, 8)
    sp = RandomSpatial()
    a = sp.apply(x, sp.sample(x.shape[2:], SPACING, 3, make_generator(11)), SPACING)
    b = sp.apply(x, sp.sample(x.shape[2:], SPACING, 3, make_generator(11)), SPACING)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # each sample has its own parameters
    c = sp.apply(x, sp.sample(x.shape[2:], SPACING, 3, make_generator(12)), SPACING)
    assert not torch.allclose(a, c)


def test_shapes_dtypes_and_errors():
    sp = RandomSpatial()
    params = sp.sample((16, 16, 8), SPACING, 2, make_generator(0), out_shape=(8, 8, 4))
    lab = torch.randint(0, 3, (2, 1, 16, 16, 8), dtype=torch.int32)
    out = sp.apply(lab, params, SPACING, mode="nearest")
    assert out.shape == (2, 1, 8, 8, 4) and out.dtype == torch.int32
    with pytest.raises(ValueError, match="nearest"):
        sp.apply(lab, params, SPACING, mode="bilinear")
    with pytest.raises(ValueError, match="B, C, X, Y, Z"):
        sp.apply(torch.zeros(16, 16, 8), params, SPACING)
    with pytest.raises(ValueError, match="rotation"):
        RandomSpatial(rotation=(-200, 10))
    with pytest.raises(ValueError, match="elastic_points"):
        RandomSpatial(elastic_points=1)
    with pytest.raises(ValueError, match="flip_prob"):
        RandomSpatial(flip_prob=(0.5,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    sp = RandomSpatial()
    x = torch.randint(0, 4, (2, 1, 16, 16, 8), device="cuda")
    out = sp.apply(x, sp.sample(x.shape[2:], SPACING, 2, make_generator(0, "cuda"), "cuda"), SPACING, mode="nearest")
    assert out.device.type == "cuda"
