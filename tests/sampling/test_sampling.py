"""Cached sampling (densitylab.sampling) against the naive full pass: per-step parameters, images
drawn bit for bit, method selection."""

import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.sampling import FullPass
from tests.models.test_autoregressive import CASES, CONDITIONAL, _model

CACHED = [case for case in CASES if not case.startswith("made")]


def _positions(shape):
    c, h, w = shape
    return [(ch, i, j) for i in range(h) for j in range(w) for ch in range(c)]


@pytest.mark.parametrize("case", CACHED)
@pytest.mark.parametrize("shape", [(1, 4, 5), (3, 3, 4)])
@pytest.mark.parametrize("conditional", [False, True])
def test_cached_parameters_equal_the_full_pass_at_every_step(case, shape, conditional):
    """Fed a fixed random image in order, the cached state's parameters for each sub-pixel equal the
    full network's at that position, to 1e-12 in float64 (the image is complete from the start, so
    this also checks that the cache never reads a sub-pixel it must not see)."""
    if conditional and case not in CONDITIONAL:
        pytest.skip("covered by the unconditional case")
    model = _model(case, shape, 4, **({"n_classes": 3} if conditional else {}))
    x = torch.randint(0, 4, (5, *shape))
    cond = torch.tensor([0, 2, 1, 1, 0]) if conditional else None
    expected = model.params_from_input(model.scale_input(x), cond)  # (B, C, P, H, W)
    cached, naive = model.cached_sampler(model, x, cond), FullPass(model, x, cond)
    for c, i, j in _positions(shape):
        got = cached.params(c, i, j)
        torch.testing.assert_close(got, expected[:, c, :, i, j], rtol=0, atol=1e-12)
        torch.testing.assert_close(naive.params(c, i, j), got, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in CONDITIONAL if c in CACHED])
def test_conditional_samples_are_the_same_with_both_methods(case):
    model = _model(case, (3, 3, 3), 4, n_classes=3)
    labels = torch.tensor([0, 1, 2, 2])
    draws = [model.sample(4, labels, generator=torch.Generator().manual_seed(2), method=m)
             for m in ("cached", "naive")]
    assert torch.equal(*draws)


@pytest.mark.parametrize("name", ["pixelcnn", "gated_pixelcnn", "wavenet"])
def test_28x28_images_are_identical_bit_for_bit(name):
    """Default sizes, float32, PyTorch's own initialisation: the same seed gives the same 28x28
    images from both methods (the naive one runs the full network 784 times)."""
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 256, {}).eval()
    draws = [model.sample(2, generator=torch.Generator().manual_seed(7), method=m)
             for m in ("cached", "naive")]
    assert torch.equal(*draws)
    assert draws[0].float().std() > 0  # not a constant image


def test_default_method_is_cached_where_it_exists():
    model = _model("pixelcnn", (1, 2, 2), 4)
    assert model.step_state(None) is model.cached_sampler
    made = _model("made", (1, 2, 2), 4)
    assert made.step_state(None) is FullPass


@pytest.mark.parametrize("case, method, message", [
    ("pixelcnn", "fast", "unknown sampling method"),
    ("made", "fast", "unknown sampling method"),
])
def test_bad_methods_are_refused(case, method, message):
    model = _model(case, (1, 2, 2), 4)
    with pytest.raises(DensitylabError, match=message):
        model.sample(2, method=method)
