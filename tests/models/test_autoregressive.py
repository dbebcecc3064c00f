"""One suite for every autoregressive image model and option: exact normalization, the
autoregressive property from the autograd Jacobian, sampler equality, conditioning, anchors."""

import math

import pytest
import torch

from densitylab import build_model
from densitylab.models.autoregressive.base import AutoregressiveImageModel
from tests.conftest import all_images

TINY_GATED = {"head": "softmax", "hidden_channels": 6, "vertical_channels": 6, "gate_channels": 6,
              "skip_channels": 6, "output_hidden": 12, "n_layers": 3, "first_kernel": 3}
TINY_PIXELCNN = {"head": "softmax", "hidden_channels": 12, "n_residual_blocks": 2, "first_kernel": 3,
                 "output_hidden": 12}
TINY_WAVENET = {"residual_channels": 8, "skip_channels": 8, "output_hidden": 8, "layers_per_block": 3,
                "n_blocks": 2}
TINY_RNN = {"hidden_size": 8, "n_layers": 2}
TINY_MADE = {"hidden_sizes": [24, 24], "output_rank": 3}

CASES = {
    "pixelcnn": ("pixelcnn", TINY_PIXELCNN),
    "pixelcnn-mixture": ("pixelcnn", TINY_PIXELCNN | {"head": "logistic-mixture", "mixture_components": 2}),
    "gated": ("gated_pixelcnn", TINY_GATED),
    "gated-mixture": ("gated_pixelcnn", TINY_GATED | {"head": "logistic-mixture", "mixture_components": 3}),
    "gated-narrow-vertical": ("gated_pixelcnn", TINY_GATED | {"vertical_channels": 2}),
    "gated-narrow-gates": ("gated_pixelcnn", TINY_GATED | {"hidden_channels": 12, "skip_channels": 12,
                                                         "vertical_channels": 3, "gate_channels": 6}),
    "wavenet": ("wavenet", TINY_WAVENET),
    "wavenet-coords": ("wavenet", TINY_WAVENET | {"coords": True}),
    "rnn": ("rnn", TINY_RNN),
    "rnn-gru-coords": ("rnn", TINY_RNN | {"cell": "gru", "coords": True}),
    "made": ("made", TINY_MADE),
    "made-columns": ("made", TINY_MADE | {"ordering": "columns"}),
}
CONDITIONAL = ["pixelcnn", "gated", "gated-mixture", "wavenet-coords", "rnn", "made"]


def _model(case, shape, levels, **extra):
    name, options = CASES[case]
    model = build_model(name, shape, levels, options | extra).double()
    with torch.no_grad():  # non-trivial weights everywhere: a zero gradient is a cut connection
        for name, p in model.named_parameters():  # small biases: no ReLU is dead for every input
            p.normal_(0, 0.05 if name.endswith("bias") else 0.5)
    return model.eval()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape, levels", [((1, 2, 2), 4), ((3, 1, 2), 2)])
def test_exact_normalization(case, shape, levels):
    model = _model(case, shape, levels)
    log_p = model.log_prob(all_images(*shape, levels))
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-6)


def dependencies(model: AutoregressiveImageModel, cond=None) -> torch.Tensor:
    """deps[a, b]: the parameters of the sub-pixel of rank a depend on the input of rank b."""
    c, h, w = model.shape
    inputs = (2 * torch.randn(64, c, h, w, dtype=torch.double)).requires_grad_()  # many: no unit dead for all
    rank = model.order_rank()
    params = model.params_from_input(inputs, cond)  # (B, C, P, H, W)
    deps = torch.zeros(model.dim, model.dim, dtype=torch.bool)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                (grad,) = torch.autograd.grad(params[:, ch, :, i, j].pow(2).sum(), inputs,
                                              retain_graph=True)
                deps[rank[ch, i, j], rank[(grad != 0).any(0)]] = True
    return deps


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 3, 3)])
def test_autoregressive_property(case, shape):
    model = _model(case, shape, 4)
    deps = dependencies(model)
    assert not torch.triu(deps).any(), "an output depends on its own input or a later one"
    if not case.startswith("made"):  # MADE's random degrees may leave a connection out
        assert deps[1, 0] and deps[model.dim - 1, model.dim - 2], "the previous sub-pixel is unused"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", [(1, 5, 3), (3, 2, 3)])
def test_model_sampler_equals_reference_sampler(case, shape):
    """The model's fast sampler draws the same images as one full pass per sub-pixel."""
    model = _model(case, shape, 4)
    fast = model.sample(6, temperature=0.9, generator=torch.Generator().manual_seed(5))
    slow = AutoregressiveImageModel.sample(model, 6, temperature=0.9,
                                           generator=torch.Generator().manual_seed(5))
    assert torch.equal(fast, slow)
    assert fast.dtype == torch.long and 0 <= fast.min() and fast.max() <= 3


@pytest.mark.parametrize("case", CASES)
def test_greedy_sampling_picks_the_mode_everywhere(case):
    model = _model(case, (2, 3, 3), 5)
    x = model.sample(3, temperature=0.0)
    logits = model.head.level_logits(model.params_from_input(model.scale_input(x)).movedim(2, -1))
    assert torch.equal(x, logits.argmax(-1))


@pytest.mark.parametrize("case", CONDITIONAL)
def test_conditional_model_samples_its_class_distribution(case):
    model = _model(case, (1, 2, 2), 2, n_classes=3)
    images = all_images(1, 2, 2, 2)
    per_label = [model.log_prob(images, torch.full((16,), y)) for y in range(3)]
    for log_p in per_label:
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-6)
    assert not torch.allclose(per_label[0], per_label[2], atol=1e-3), "the label is ignored"
    samples = model.sample(20000, cond=torch.tensor(2), generator=torch.Generator().manual_seed(0))
    codes = (samples.view(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).double() / len(codes)
    image_codes = (images.view(-1, 4) * torch.tensor([8, 4, 2, 1])).sum(1)
    assert torch.allclose(freq[image_codes], per_label[2].exp(), atol=0.015)


@pytest.mark.parametrize("case", [c for c in CASES if "mixture" not in c])
@pytest.mark.parametrize("levels", [2, 256])
def test_uniform_anchor_is_exactly_log2_k(case, levels):
    """A zero output layer makes every softmax uniform: exactly log2 K bits/dim."""
    model = _model(case, (1, 3, 3), levels)
    x = torch.randint(0, levels, (4, 1, 3, 3))
    model.initialize_from_data(torch.arange(levels).repeat(9).view(-1, 1, 3, 3))  # flat histogram
    assert model.bits_per_dim(x).double().mean().item() == pytest.approx(math.log2(levels), abs=1e-9)


@pytest.mark.parametrize("case", CASES)
def test_data_initialization_starts_from_the_marginal_model(case):
    """After initialize_from_data, all pixels share the data's smoothed value histogram."""
    model = _model(case, (1, 3, 3), 4)
    x = torch.randint(0, 4, (200, 1, 3, 3))
    model.initialize_from_data(x)
    log_p = model.head.level_logits(model.params_from_input(model.scale_input(x[:2])).movedim(2, -1))
    assert torch.allclose(log_p[0, 0, 0], log_p[1, 0, 2], atol=1e-9)  # no input dependence left
    if "mixture" not in case:
        counts = torch.bincount(x.flatten(), minlength=4).double() + 1
        assert torch.allclose(log_p[0, 0, 0], (counts / counts.sum()).log(), atol=1e-9)


def test_labels_are_validated():
    from densitylab.errors import DensitylabError

    conditional = _model("gated", (1, 2, 2), 2, n_classes=3)
    x = torch.zeros(2, 1, 2, 2, dtype=torch.long)
    with pytest.raises(DensitylabError, match="class-conditional"):
        conditional.log_prob(x)
    with pytest.raises(DensitylabError, match="0..2"):
        conditional.log_prob(x, torch.tensor([0, 3]))
    with pytest.raises(DensitylabError, match="not class-conditional"):
        _model("gated", (1, 2, 2), 2).log_prob(x, torch.tensor([0, 1]))


@pytest.mark.parametrize("case", ["gated", "gated-narrow-vertical", "gated-narrow-gates"])
def test_gated_pixelcnn_sees_every_earlier_pixel(case):
    """No blind spot: with enough layers, the last pixel depends on all earlier pixels."""
    model = _model(case, (1, 5, 5), 2, n_layers=5)
    deps = dependencies(model)
    assert deps[24, :24].all()
    assert deps[2 * 5 + 2, : 2 * 5 + 2].all()  # the middle pixel, including up-and-right ones


def test_wavenet_receptive_field_is_as_stated():
    model = _model("wavenet", (1, 6, 6), 2, layers_per_block=2, n_blocks=1)  # 1 + 3 steps
    assert model.receptive_field == 4
    deps = dependencies(model)
    t = 20
    assert deps[t, t - 4 : t].all() and not deps[t, : t - 4].any()
