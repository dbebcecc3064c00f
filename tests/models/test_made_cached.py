"""MADE's cached sampler (each hidden unit computed once, at the step where its last input is drawn)
against the naive one (the hidden layers once per sub-pixel): per-step logits within 1e-12 in
float64, and the same images bit for bit under the same seed."""

import pytest
import torch

from densitylab import build_model
from densitylab.models.autoregressive.made import ORDERINGS
from densitylab.models.autoregressive.made_cache import MADECache, MADEPass

SMALL = {"hidden_sizes": [24, 20]}


def _made(shape, levels, options=None):
    model = build_model("made", shape, levels, SMALL | (options or {}))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    return model.double().eval()


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("options", [{}, {"output_rank": 2}, {"n_classes": 3}, {"hidden_sizes": [30]},
                                     {"n_masks": 3, "resample_order": True}])
def test_cached_logits_equal_the_naive_ones_at_every_step(ordering, options):
    """Fed a fixed image, step by step in each mask set's order: the cache never reads a value it
    must not see (the image is complete from the start) and gives the naive logits."""
    model = _made((2, 2, 3), 5, options | {"ordering": ordering})
    x = torch.randint(0, 5, (4, 2, 2, 3), generator=torch.Generator().manual_seed(0))
    cond = torch.tensor([0, 2, 1, 1]) if model.n_classes else None
    for mask in range(model.n_masks):
        rows = torch.tensor([0, 2]) if mask else None  # a subset of the batch, as for mixtures
        cached, naive = MADECache(model, x, cond, mask, rows), MADEPass(model, x, cond, mask, rows)
        for step in range(model.dim):
            torch.testing.assert_close(cached.params_at(step), naive.params_at(step), rtol=0, atol=1e-12)


@pytest.mark.parametrize("options", [{}, {"n_masks": 3, "resample_order": True}, {"n_classes": 3}])
def test_cached_and_naive_samples_are_identical(options):
    model = _made((3, 2, 2), 7, options | {"ordering": "random"})
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1]) if model.n_classes else None
    draws = [model.sample(8, labels, 0.8, torch.Generator().manual_seed(3), method=m)
             for m in ("cached", "naive")]
    assert torch.equal(*draws)
    assert model.sample(8, labels, 0.8, torch.Generator().manual_seed(3)).equal(draws[0])  # the default


def test_28x28_float32_samples_are_identical_bit_for_bit():
    torch.manual_seed(0)
    model = build_model("made", (1, 28, 28), 256, {}).eval()
    with torch.no_grad():  # leave the zero start of the output weights
        model.output_weight().normal_(0, 0.3)
    draws = [model.sample(2, generator=torch.Generator().manual_seed(7), method=m)
             for m in ("cached", "naive")]
    assert torch.equal(*draws)
    assert draws[0].float().std() > 0
