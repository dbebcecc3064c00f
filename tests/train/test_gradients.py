"""clip_gradient_norm agrees with torch's clip_grad_norm_, and leaves small gradients untouched."""

import math

import pytest
import torch

from densitylab.train.gradients import clip_gradient_norm


def _parameters_with_gradients(scale: float) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(0)
    parameters = [torch.nn.Parameter(torch.zeros(shape)) for shape in [(3, 4), (5,), (2, 2, 2)]]
    for p in parameters:
        p.grad = torch.randn(p.shape, generator=generator) * scale
    parameters.append(torch.nn.Parameter(torch.zeros(2)))  # no gradient: skipped
    return parameters


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_matches_torch(scale):
    ours, theirs = _parameters_with_gradients(scale), _parameters_with_gradients(scale)
    norm = clip_gradient_norm(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    torch.testing.assert_close(norm, expected)
    for a, b in zip(ours[:3], theirs[:3], strict=True):
        torch.testing.assert_close(a.grad, b.grad)
    clipped = math.sqrt(sum(float(p.grad.square().sum()) for p in ours[:3]))
    assert clipped == pytest.approx(min(float(norm), 1.0), rel=1e-5)


def test_small_gradients_are_not_rewritten():
    parameters = _parameters_with_gradients(0.01)
    before = [p.grad.clone() for p in parameters[:3]]
    clip_gradient_norm(parameters, 100.0)
    assert all(torch.equal(p.grad, b) for p, b in zip(parameters[:3], before, strict=True))


def test_non_finite_gradients_give_a_non_finite_norm():
    parameters = _parameters_with_gradients(1.0)
    parameters[0].grad[0, 0] = float("nan")
    assert not torch.isfinite(clip_gradient_norm(parameters, 1.0))
