import math

import pytest
import torch

import densitylab.models.autoregressive.rnn  # noqa: F401  (registers "rnn")
from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.models.autoregressive.rnn import PixelRNNConfig, sequence_coordinates
from tests.conftest import all_images

SMALL = {"hidden_size": 6, "n_layers": 2}
VARIANTS = [
    {"cell": cell, "coords": coords} | SMALL for cell in ("lstm", "gru") for coords in (False, True)
]


def _randomized(model):
    """Non-trivial weights everywhere (so a zero gradient means a missing connection)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def _code(images, levels):
    """One integer per image (its digits in base ``levels``, raster order, channels innermost)."""
    flat = images.permute(0, 2, 3, 1).reshape(len(images), -1)
    powers = levels ** torch.arange(flat.shape[1] - 1, -1, -1)
    return (flat * powers).sum(1)


@pytest.mark.parametrize("config", VARIANTS)
@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 4), ((3, 1, 2), 2)])
def test_exact_normalization(config, shape, levels):
    model = _randomized(build_model("rnn", shape, levels, config)).double()
    log_p = model.log_prob(all_images(*shape, levels))
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)


def _dependencies(model, shape):
    """deps[t, s] = True when some parameter of the sub-pixel of rank t depends on the input of rank s."""
    c, h, w = shape
    inputs = torch.randn(3, c, h, w, dtype=torch.float64, requires_grad=True)
    rank = model.order_rank()
    deps = torch.zeros(c * h * w, c * h * w, dtype=torch.bool)
    params = model.params_from_input(inputs)  # (3, C, K, H, W)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                (grad,) = torch.autograd.grad(params[:, ch, :, i, j].pow(2).sum(), inputs,
                                              retain_graph=True)
                deps[rank[ch, i, j], rank[(grad != 0).any(0)]] = True
    return deps


@pytest.mark.parametrize("config", VARIANTS)
@pytest.mark.parametrize("shape", [(1, 3, 3), (3, 2, 2)])
def test_autoregressive_property(config, shape):
    model = _randomized(build_model("rnn", shape, 3, config)).double()
    deps = _dependencies(model, shape)
    assert not torch.triu(deps).any()  # nothing at or after its own rank
    assert all(deps[t, t - 1] for t in range(1, len(deps)))  # the previous sub-pixel
    # and, through the hidden state, the whole past
    assert torch.equal(deps, torch.ones_like(deps).tril(-1))


def test_order_is_raster_with_channels_innermost():
    model = build_model("rnn", (3, 2, 2), 2, SMALL)
    assert torch.equal(model.order_rank(), torch.arange(12).view(2, 2, 3).permute(2, 0, 1))


def test_coordinates_of_the_predicted_sub_pixel():
    coords = sequence_coordinates((3, 2, 3))  # rank t = (i * 3 + j) * 3 + c
    assert coords.shape == (18, 3)
    assert coords[0].tolist() == [-1.0, -1.0, -1.0]
    assert coords[(1 * 3 + 1) * 3 + 2].tolist() == [1.0, 0.0, 1.0]
    assert sequence_coordinates((1, 1, 2)).tolist() == [[0.0, -1.0], [0.0, 1.0]]


@pytest.mark.parametrize("config", VARIANTS)
@pytest.mark.parametrize("shape, levels", [((1, 3, 4), 4), ((3, 2, 2), 3)])
def test_fast_sampler_equals_reference_sampler(config, shape, levels):
    model = _randomized(build_model("rnn", shape, levels, config)).double()
    for temperature in (1.0, 0.7):
        fast = model.sample(16, temperature=temperature, generator=torch.Generator().manual_seed(5))
        slow = AutoregressiveImageModel.sample(model, 16, temperature=temperature,
                                               generator=torch.Generator().manual_seed(5))
        assert torch.equal(fast, slow)
        assert fast.shape == (16, *shape) and fast.min() >= 0 and fast.max() < levels


def test_conditional_sampler_equals_reference_and_greedy_is_argmax():
    model = _randomized(build_model("rnn", (2, 2, 3), 3, SMALL | {"n_classes": 3, "coords": True}))
    model.double()
    labels = torch.tensor([0, 2, 1, 2])
    fast = model.sample(4, labels, generator=torch.Generator().manual_seed(1))
    slow = AutoregressiveImageModel.sample(model, 4, labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(fast, slow)
    greedy = model.sample(4, labels, temperature=0.0)
    assert torch.equal(greedy, model.params_from_input(model.scale_input(greedy), labels).argmax(2))


def test_label_changes_log_prob_and_samples_follow_the_conditional():
    model = _randomized(build_model("rnn", (1, 2, 2), 2, SMALL | {"n_classes": 2}))
    images = all_images(1, 2, 2, 2)
    log_p0 = model.log_prob(images, torch.zeros(16, dtype=torch.long))
    log_p1 = model.log_prob(images, torch.ones(16, dtype=torch.long))
    assert not torch.allclose(log_p0, log_p1, atol=1e-3)
    assert torch.logsumexp(log_p1.double(), 0).item() == pytest.approx(0.0, abs=1e-5)
    samples = model.sample(20000, cond=torch.tensor(1), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(_code(samples, 2), minlength=16).float() / len(samples)
    assert torch.allclose(freq[_code(images, 2)], log_p1.exp(), atol=0.015)


def test_labels_are_validated():
    conditional = build_model("rnn", (1, 2, 2), 2, SMALL | {"n_classes": 3})
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    with pytest.raises(DensitylabError, match="class-conditional"):
        conditional.log_prob(x)
    with pytest.raises(DensitylabError, match="0..2"):
        conditional.log_prob(x, torch.tensor([0, 3]))
    with pytest.raises(DensitylabError, match="not class-conditional"):
        build_model("rnn", (1, 2, 2), 2, SMALL).sample(2, cond=torch.tensor([0, 1]))


@pytest.mark.parametrize("levels", [2, 256])
def test_uniform_anchor_is_exactly_log2_k(levels):
    model = _randomized(build_model("rnn", (3, 3, 4), levels, SMALL | {"coords": True}))
    with torch.no_grad():
        model.output_weight().zero_()
        model.output_bias().zero_()
    x = torch.randint(0, levels, (5, 3, 3, 4))
    assert torch.allclose(model.bits_per_dim(x), torch.full((5,), math.log2(levels)), atol=1e-6)


def test_data_initialization_starts_from_the_per_channel_histogram():
    model = _randomized(build_model("rnn", (3, 4, 4), 5, SMALL))
    x = torch.randint(0, 5, (50, 3, 4, 4))
    x[:, 1] = x[:, 1].clamp(max=2)  # channels with different histograms
    model.initialize_from_data(x)
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=5) for c in range(3)])
    log_freq = torch.log((counts + 1.0) / (counts + 1.0).sum(1, keepdim=True))
    expected = sum(log_freq[c][x[:, c]].flatten(1).sum(1) for c in range(3))
    assert torch.allclose(model.log_prob(x), expected.float(), atol=1e-4)


def test_config_validation_and_construction():
    with pytest.raises(DensitylabError, match="cell"):
        build_model("rnn", (1, 2, 2), 2, {"cell": "rnn"})
    with pytest.raises(DensitylabError, match="hidden_size"):
        build_model("rnn", (1, 2, 2), 2, {"hidden_size": 0})
    a = build_model("rnn", (1, 4, 4), 4, PixelRNNConfig(hidden_size=8, cell="gru"))
    b = build_model("rnn", (1, 4, 4), 4, {"hidden_size": 8, "cell": "gru"})
    assert a.config == b.config and isinstance(a.rnn, torch.nn.GRU)
    assert not any(k in a.state_dict() for k in ("coords", "channel_index"))
