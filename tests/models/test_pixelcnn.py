import math

import pytest
import torch

from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.evaluate import bits_per_dim
from densitylab.models.autoregressive.base import sample_categorical
from densitylab.nn.masked import autoregressive_mask
from tests.conftest import all_images

SMALL = {"head": "softmax", "hidden_channels": 12, "n_residual_blocks": 2,
         "first_kernel": 3, "output_hidden": 12}


def _randomized(model):
    """Non-trivial weights everywhere (so a zero gradient means a masked connection)."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 4), ((3, 1, 2), 2), ((1, 3, 2), 3)])
def test_exact_normalization(shape, levels):
    model = _randomized(build_model("pixelcnn", shape, levels, SMALL)).double()
    images = all_images(*shape, levels)
    log_p = model.log_prob(images)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)


def _dependencies(model, shape):
    """deps[o, i] = True when some logit of output position o depends on input position i.

    Positions are (channel, row, col) flattened in the model's order: raster over pixels, then
    channels within a pixel.
    """
    c, h, w = shape
    # several random inputs, so a connection hidden behind an inactive ReLU for one input shows
    inputs = torch.randn(4, c, h, w, requires_grad=True)
    order = torch.arange(c * h * w).view(h, w, c).permute(2, 0, 1)  # position of (ch, i, j)
    deps = torch.zeros(c * h * w, c * h * w, dtype=torch.bool)
    logits = model.params_from_input(inputs)  # (4, C, K, H, W)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                (grad,) = torch.autograd.grad(logits[:, ch, :, i, j].pow(2).sum(), inputs,
                                              retain_graph=True)
                used = (grad != 0).any(0)  # (C, H, W)
                deps[order[ch, i, j], order[used]] = True
    return deps


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 3)])
def test_autoregressive_property(shape):
    model = _randomized(build_model("pixelcnn", shape, 4, SMALL))
    deps = _dependencies(model, shape)
    # no output may depend on its own position or any later one
    assert not torch.triu(deps).any()
    # and it does use the previous position (the left pixel / earlier channel)
    assert deps[1, 0]


def test_blind_spot_of_plain_pixelcnn():
    """Stacked masked 3x3 convolutions never see (r - k, c + j) with j > k: the blind spot.

    Each layer moves the receptive field at most one row up and one column right, and never
    right within a row, so after 4 layers pixel (3, 2) sees every earlier pixel except
    (2, 4), (2, 5) and (1, 5).
    """
    model = _randomized(build_model("pixelcnn", (1, 6, 6), 2, SMALL | {"n_residual_blocks": 3}))
    deps = _dependencies(model, (1, 6, 6))
    seen = deps[3 * 6 + 2].view(6, 6)
    blind = {(2, 4), (2, 5), (1, 5)}
    for i in range(6):
        for j in range(6):
            earlier = (i, j) < (3, 2)
            assert bool(seen[i, j]) == (earlier and (i, j) not in blind), (i, j)


def test_mask_shapes():
    mask_a = autoregressive_mask(1, 2, 3, "A")
    assert mask_a.shape == (2, 1, 2, 3)
    assert mask_a[0, 0].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert autoregressive_mask(1, 2, 3, "B")[0, 0].tolist() == [[1, 1, 1], [1, 1, 0]]
    colour = autoregressive_mask(3, 3, 1, "A", n_colors=3)[:, :, 0, 0]
    assert colour.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_uniform_anchor_is_exactly_log2_k():
    for levels in (2, 256):
        model = build_model("pixelcnn", (1, 4, 4), levels, SMALL)
        last = model.output[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)
        x = torch.randint(0, levels, (5, 1, 4, 4))
        assert bits_per_dim(model, x) == pytest.approx(math.log2(levels), abs=1e-6)


def test_sampling_is_seeded_and_in_range():
    model = _randomized(build_model("pixelcnn", (1, 4, 4), 4, SMALL))
    a = model.sample(6, generator=torch.Generator().manual_seed(3))
    b = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (6, 1, 4, 4)
    assert a.min() >= 0 and a.max() <= 3
    greedy = model.sample(2, temperature=0.0)
    assert greedy.shape == (2, 1, 4, 4)


def test_sampled_frequencies_match_the_model():
    """The empirical distribution of samples matches P(x) on all 16 images of 1x2x2, K=2."""
    model = _randomized(build_model("pixelcnn", (1, 2, 2), 2, SMALL))
    images = all_images(1, 2, 2, 2)
    probs = model.log_prob(images).exp()
    samples = model.sample(20000, generator=torch.Generator().manual_seed(0))
    codes = (samples.view(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).float() / len(codes)
    image_codes = (images.view(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(1)
    assert torch.allclose(freq[image_codes], probs, atol=0.015)


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.zeros(2, 1, 3, 4, dtype=torch.long), "shape"),
        (torch.zeros(2, 1, 4, 4), "integer"),
        (torch.full((2, 1, 4, 4), 4), "0..3"),
        (torch.full((2, 1, 4, 4), -1), "0..3"),
    ],
)
def test_bad_inputs_raise(x, message):
    model = build_model("pixelcnn", (1, 4, 4), 4, SMALL)
    with pytest.raises(DensitylabError, match=message):
        model.log_prob(x)


def test_unknown_model_and_option():
    with pytest.raises(DensitylabError, match="unknown model"):
        build_model("pixelcnnn", (1, 4, 4), 2)
    with pytest.raises(DensitylabError, match="no option"):
        build_model("pixelcnn", (1, 4, 4), 2, {"width": 3})


def test_data_initialization_starts_from_the_marginal_histogram():
    """After the data-dependent init, log P(x) is the smoothed per-channel marginal model."""
    model = _randomized(build_model("pixelcnn", (3, 4, 4), 5, SMALL))
    x = torch.randint(0, 5, (50, 3, 4, 4))
    model.initialize_from_data(x)
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=5) for c in range(3)])
    log_freq = torch.log((counts + 1.0) / (counts + 1.0).sum(1, keepdim=True))
    expected = sum(log_freq[c][x[:, c]].flatten(1).sum(1) for c in range(3))
    assert torch.allclose(model.log_prob(x), expected.float(), atol=1e-4)


def _reference_sample(model, n, temperature, generator):
    """The textbook sampler: the full network on the full image for every pixel and channel."""
    c, h, w = model.shape
    x = torch.zeros(n, c, h, w, dtype=torch.long)
    for i in range(h):
        for j in range(w):
            for ch in range(c):
                logits = model.params_from_input(model.scale_input(x))[:, ch, :, i, j].float()
                x[:, ch, i, j] = sample_categorical(logits, temperature, generator)
    return x


@pytest.mark.parametrize("shape", [(1, 12, 5), (3, 6, 4)])
def test_banded_sampling_equals_full_network_sampling(shape):
    """Sampling on the receptive-field band gives the images of the full-network sampler."""
    model = _randomized(build_model("pixelcnn", shape, 4, SMALL | {"n_residual_blocks": 3}))
    model.double()
    fast = model.sample(8, temperature=0.9, generator=torch.Generator().manual_seed(2))
    slow = _reference_sample(model, 8, 0.9, torch.Generator().manual_seed(2))
    assert torch.equal(fast, slow)
    assert model.rows_above == 1 + 3


def test_greedy_sampling_picks_the_argmax_everywhere():
    model = _randomized(build_model("pixelcnn", (2, 4, 4), 5, SMALL))
    x = model.sample(3, temperature=0.0)
    assert torch.equal(x, model.params_from_input(model.scale_input(x)).argmax(2))


def test_build_from_config_dataclass_or_dict():
    from densitylab.models.autoregressive.pixelcnn import PixelCNNConfig

    a = build_model("pixelcnn", (1, 4, 4), 4, PixelCNNConfig(hidden_channels=8))
    b = build_model("pixelcnn", (1, 4, 4), 4, {"hidden_channels": 8})
    assert a.config == b.config == PixelCNNConfig(hidden_channels=8)
