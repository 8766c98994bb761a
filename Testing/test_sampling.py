import pytest
import torch

from SpineSynthSegLib.synthesis.sampling import (
    Bernoulli,
    Choice,
    Fixed,
    LogUniform,
    Normal,
    RandInt,
    Uniform,
    make_generator,
    make_sampler,
)

SAMPLERS = [Fixed(2.0), Uniform(-1, 3), LogUniform(0.1, 10), Normal(1, 2), RandInt(2, 5), Choice((1.0, 4.0), (1, 3)), Bernoulli(0.3)]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: type(s).__name__)
def test_shape_dtype_and_determinism(sampler):
    a = sampler.sample((4, 3), make_generator(7))
    b = sampler.sample((4, 3), make_generator(7))
    assert a.shape == (4, 3) and a.dtype == torch.float32
    assert torch.equal(a, b)


def test_ranges_are_respected():
    g = make_generator(0)
    u = Uniform(-1, 3).sample((10000,), g)
    assert u.min() >= -1 and u.max() <= 3 and abs(u.mean().item() - 1) < 0.1
    r = RandInt(2, 5).sample((10000,), g)
    assert set(r.unique().tolist()) == {2.0, 3.0, 4.0, 5.0}
    lu = LogUniform(0.1, 10).sample((10000,), g)
    assert lu.min() >= 0.1 and lu.max() <= 10 and abs(lu.log().mean().item()) < 0.1
    c = Choice((1.0, 4.0), (1, 3)).sample((10000,), g)
    assert abs((c == 4).float().mean().item() - 0.75) < 0.03
    assert abs(Bernoulli(0.3).sample((10000,), g).mean().item() - 0.3) < 0.03


def test_different_seeds_differ():
    assert not torch.equal(Uniform(0, 1).sample((5,), make_generator(1)), Uniform(0, 1).sample((5,), make_generator(2)))


def test_make_sampler_conversions():
    assert make_sampler(3) == Fixed(3.0)
    assert make_sampler((1, 2)) == Uniform(1.0, 2.0)
    s = Normal(0, 1)
    assert make_sampler(s) is s


@pytest.mark.parametrize("bad,exc", [((2, 1), ValueError), ((1, 2, 3), TypeError), ("a", TypeError), (float("nan"), ValueError), (True, TypeError)])
def test_make_sampler_rejects_bad_values(bad, exc):
    with pytest.raises(exc, match="widget"):
        make_sampler(bad, "widget")


def test_make_sampler_bounds():
    with pytest.raises(ValueError, match="std.*>= 0"):
        make_sampler((-1, 2), "std", min_value=0)
    with pytest.raises(ValueError, match="<= 1"):
        make_sampler(Uniform(0, 2), "p", max_value=1)


@pytest.mark.parametrize("ctor", [lambda: LogUniform(0, 1), lambda: Normal(0, -1), lambda: RandInt(3, 1), lambda: Choice(()), lambda: Bernoulli(1.5), lambda: Choice((1.0,), (1, 2))])
def test_invalid_sampler_construction(ctor):
    with pytest.raises(ValueError):
        ctor()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device():
    out = Uniform(0, 1).sample((3,), make_generator(0), "cuda")
    assert out.device.type == "cuda"
