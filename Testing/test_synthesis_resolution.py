import pytest
import torch

from SpineSynthSegLib.synthesis.resolution import (
    RandomResolution,
    ResolutionParams,
    apply_along_axis,
    blur_matrix,
    down_up_matrix,
)
from SpineSynthSegLib.synthesis.sampling import make_generator


def test_operators_identity_and_partition_of_unity():
    n = 17
    assert torch.allclose(down_up_matrix(torch.ones(2), n), torch.eye(n).expand(2, n, n))
    assert torch.allclose(blur_matrix(torch.zeros(2), n), torch.eye(n).expand(2, n, n), atol=1e-6)
    for op in (down_up_matrix(torch.tensor([3.7]), n), blur_matrix(torch.tensor([2.5]), n)):
        assert torch.allclose(op.sum(-1), torch.ones(1, n), atol=1e-5)  # constants are kept


def test_down_up_is_exact_on_linear_ramp_and_loses_detail():
    n = 31
    ramp = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1, 1)
    op = down_up_matrix(torch.tensor([3.0]), n)
    out = apply_along_axis(ramp, op, 0)
    assert torch.allclose(out[0, 0, :28, 0, 0], ramp[0, 0, :28, 0, 0], atol=1e-4)  # up to the last coarse sample
    stripes = (torch.arange(n) % 2).float().view(1, 1, n, 1, 1)
    aliased = apply_along_axis(stripes, op, 0)  # without the slice-profile blur: aliasing
    assert aliased.std() > 0.5 * stripes.std()
    blurred = apply_along_axis(stripes, op @ blur_matrix(torch.tensor([0.75 * 3]), n), 0)
    assert blurred[0, 0, 6:-6].std() < 0.1 * stripes.std()  # interior, away from the padded edges


def test_apply_along_each_axis_matches_reference():
    x = torch.randn(2, 1, 9, 10, 11)
    op = blur_matrix(torch.tensor([1.0, 0.0]), 10)
    out = apply_along_axis(x, op, 1)
    ref = torch.einsum("bcxjz,bij->bcxiz", x, op)
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)  # sigma 0 for the second sample


def test_random_resolution_per_sample_and_native_untouched():
    res = RandomResolution(prob=1.0, slice_thickness=(6.0, 6.0), axis_weights=(1, 0, 0), in_plane=(1.0, 1.0))
    params = res.sample(3, (1.0, 1.0, 1.0), make_generator(0))
    assert torch.allclose(params.spacing, torch.tensor([[6.0, 1.0, 1.0]] * 3))
    x = torch.rand(3, 1, 24, 12, 12)
    y = res.apply(x, params, (1.0, 1.0, 1.0))
    assert y.shape == x.shape
    # blurred along axis 0 only: variance along 0 drops a lot, along 1 barely
    assert (y[:, :, 1:] - y[:, :, :-1]).abs().mean() < 0.3 * (x[:, :, 1:] - x[:, :, :-1]).abs().mean()
    off = ResolutionParams(torch.tensor([[1.0, 1.0, 1.0]] * 3))
    assert torch.equal(res.apply(x, off, (1.0, 1.0, 1.0)), x)


def test_never_finer_than_input_and_axis_weighting():
    res = RandomResolution(prob=1.0)
    params = res.sample(2000, (2.0, 1.0, 1.0), make_generator(1))
    assert (params.spacing >= torch.tensor([2.0, 1.0, 1.0]) - 1e-6).all()
    thick_axis = params.spacing.argmax(1)
    assert (thick_axis == 0).float().mean() > 0.5  # weighted toward the sagittal axis


def test_bad_parameters():
    with pytest.raises(ValueError, match="slice_thickness"):
        RandomResolution(slice_thickness=(0, 5))
    with pytest.raises(ValueError, match="axis_weights"):
        RandomResolution(axis_weights=(1, 1))
    with pytest.raises(ValueError, match="blur_factor"):
        RandomResolution(blur_factor=-1)
