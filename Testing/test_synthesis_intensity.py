import pytest
import torch

from SpineSynthSegLib.synthesis.intensity import (
    BiasField,
    Gamma,
    GaussianMixture,
    Noise,
    gather_per_label,
    minmax_normalize,
    robust_normalize,
)
from SpineSynthSegLib.synthesis.sampling import make_generator


def test_gather_per_label_batched():
    values = torch.tensor([[0.0, 10.0, 20.0], [5.0, 6.0, 7.0]])
    labels = torch.tensor([0, 1, 2, 2]).view(1, 1, 4, 1, 1).repeat(2, 1, 1, 1, 1)
    out = gather_per_label(values, labels)
    assert out[0].flatten().tolist() == [0, 10, 20, 20]
    assert out[1].flatten().tolist() == [5, 6, 7, 7]


def test_gmm_zero_std_gives_exact_means_and_stats():
    labels = torch.randint(0, 4, (2, 1, 10, 9, 8), generator=make_generator(0))
    means = torch.tensor([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    img = GaussianMixture.apply(labels, means, torch.zeros(2, 4), make_generator(0))
    assert torch.equal(img, gather_per_label(means, labels))
    img = GaussianMixture.apply(labels, means, torch.full((2, 4), 2.0), make_generator(0))
    region = img[1][labels[1] == 2]
    assert abs(region.mean().item() - 30) < 0.5 and abs(region.std().item() - 2) < 0.4


def test_gmm_sampling_ranges_and_determinism():
    gmm = GaussianMixture()
    m, s = gmm.sample(3, 15, make_generator(1))
    assert m.shape == (3, 15) and m.min() >= 0 and m.max() <= 250 and s.max() <= 30
    m2, _ = gmm.sample(3, 15, make_generator(1))
    assert torch.equal(m, m2)
    with pytest.raises(ValueError, match="std"):
        GaussianMixture(std=(-1, 2))


def test_bias_field_zero_is_identity_and_smooth_positive():
    x = torch.rand(2, 1, 12, 12, 8) + 0.5
    assert torch.allclose(BiasField.apply(x, torch.zeros(2, 1, 4, 4, 4)), x)
    field = BiasField(std=(0.5, 0.5)).sample(2, make_generator(0))
    out = BiasField.apply(torch.ones(2, 1, 32, 32, 16), field)
    assert out.min() > 0 and not torch.allclose(out[0], out[1])
    # smooth: neighbouring voxels differ far less than the field's range
    assert (out[:, :, 1:] - out[:, :, :-1]).abs().max() < 0.2 * (out.max() - out.min())


def test_normalisations():
    x = torch.randn(3, 1, 8, 8, 8) * 5 + 2
    y = minmax_normalize(x)
    assert torch.allclose(y.flatten(1).min(1).values, torch.zeros(3)) and torch.allclose(y.flatten(1).max(1).values, torch.ones(3))
    z = robust_normalize(x)
    assert z.min() >= 0 and z.max() <= 1
    assert 0.004 < (z == 0).float().mean() < 0.02  # about 0.5% clipped at each end


def test_gamma_identity_and_direction():
    x = torch.rand(2, 1, 6, 6, 6)
    assert torch.allclose(Gamma.apply(x, torch.ones(2)), x)
    out = Gamma.apply(x, torch.tensor([2.0, 0.5]))
    assert (out[0] <= x[0] + 1e-6).all() and (out[1] >= x[1] - 1e-6).all()
    assert Gamma().sample(1000, make_generator(0)).log().std().item() == pytest.approx(0.5, abs=0.05)


def test_noise():
    x = torch.full((2, 1, 16, 16, 16), 0.5)
    noise = Noise()
    assert torch.equal(Noise.apply(x, torch.zeros(2), torch.tensor([False, False]), make_generator(0)), x)
    out = Noise.apply(x, torch.tensor([0.1, 0.1]), torch.tensor([False, True]), make_generator(0))
    assert abs(out[0].std().item() - 0.1) < 0.01
    assert out[1].min() >= 0  # Rician magnitude is non-negative
    std, rician = noise.sample(4, make_generator(0))
    assert std.shape == (4,) and rician.dtype == torch.bool
    with pytest.raises(ValueError):
        Noise(rician_prob=2)
