import math

import pytest
import torch

import densitylab.models.autoregressive.made  # noqa: F401  (registers "made")
from densitylab import build_model
from densitylab.errors import DensitylabError
from densitylab.models.autoregressive.base import AutoregressiveImageModel
from densitylab.models.autoregressive.made import ORDERINGS, factored_log_softmax
from densitylab.train import checkpoint as ckpt
from tests.conftest import all_images

SMALL = {"hidden_sizes": [24, 24]}
# (shape, levels, options): colour and gray, a direct D*K output (K <= output_rank) and a factored one
CASES = [((3, 1, 2), 2, {}), ((1, 2, 2), 4, {"output_rank": 2})]
MIXTURES = [{"n_masks": 3}, {"n_masks": 3, "resample_order": True}]


def _made(shape, levels, options=None):
    return build_model("made", shape, levels, SMALL | (options or {}))


def _randomized(model):
    """Non-trivial weights everywhere (so a zero gradient means a masked connection), in double."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model.double()


def _codes(images):
    """Each binary image of D pixels as an integer (its bits in flat order)."""
    flat = images.reshape(len(images), -1)
    return (flat * 2 ** torch.arange(flat.shape[1] - 1, -1, -1)).sum(1)


# ----- the chunked log-likelihood ------------------------------------------------------------------
@pytest.mark.parametrize("shape, levels, options", CASES + [((2, 3, 3), 5, {"output_rank": 3})])
def test_log_prob_equals_the_softmax_head_on_the_full_logits(shape, levels, options):
    model = _randomized(_made(shape, levels, options | {"n_classes": 2}))
    x = torch.randint(0, levels, (7, *shape))
    y = torch.randint(0, 2, (7,))
    expected = model.head.log_prob(model.params_from_input(model.scale_input(x), y), x)
    assert torch.allclose(model.log_prob(x, y), expected, rtol=0, atol=1e-10)
    grads = torch.autograd.grad(model.log_prob(x, y).sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad(expected.sum(), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-10) for a, b in zip(grads, expected_grads, strict=True))


@pytest.mark.parametrize("factored", [True, False])
def test_factored_log_softmax_gradients_in_chunks(factored):
    """Values and gradients of the chunked computation equal autograd through the full logits, for
    the gradients precomputed in the forward pass (same upstream gradient for every image) and the
    recomputed ones (any other upstream gradient; gradcheck uses one-hot ones)."""
    features = torch.randn(3, 7, 4 if factored else 5, dtype=torch.float64, requires_grad=True)
    u = torch.randn(5, 4, dtype=torch.float64, requires_grad=True) if factored else None
    bias = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 5, (3, 7))
    inputs = (features, bias) if u is None else (features, u, bias)

    def fn(*args):
        return factored_log_softmax(args[0], None if u is None else args[1], args[-1], target, chunk=3)

    assert torch.autograd.gradcheck(fn, inputs)
    logits = (features if u is None else features @ u.t()) + bias
    full = logits.log_softmax(-1).gather(-1, target[..., None]).squeeze(-1).sum(1)
    for weights in (torch.full((3,), 0.3, dtype=torch.float64), torch.tensor([0.5, -1.0, 2.0])):
        got = torch.autograd.grad((fn(*inputs) * weights).sum(), inputs)
        expected = torch.autograd.grad((full * weights).sum(), inputs, retain_graph=True)
        assert all(torch.allclose(a, b) for a, b in zip(got, expected, strict=True))
    with torch.no_grad():
        assert torch.allclose(fn(*inputs), full)
    low = factored_log_softmax(features.float(), None if u is None else u.float(), bias.float(), target)
    assert low.dtype == torch.float32


# ----- orderings -----------------------------------------------------------------------------------
def _grid(ordering):
    return _made((1, 6, 6), 2, {"ordering": ordering}).order_rank()[0].tolist()


def test_raster_and_columns_orderings():
    assert _grid("raster") == [[6 * i + j for j in range(6)] for i in range(6)]
    assert _grid("columns") == [[6 * j + i for j in range(6)] for i in range(6)]


def test_even_odd_ordering():
    rows = [0, 2, 4, 1, 3, 5]  # the order the rows are visited in
    assert _grid("even-odd") == [[6 * rows.index(i) + j for j in range(6)] for i in range(6)]


def test_top_bottom_middle_ordering():
    rows = [0, 1, 4, 5, 2, 3]
    assert _grid("top-bottom-middle") == [[6 * rows.index(i) + j for j in range(6)] for i in range(6)]
    # uneven thirds: tensor_split gives the first bands the extra rows (7 rows -> 3, 2, 2)
    ranks = _made((1, 7, 1), 2, {"ordering": "top-bottom-middle"}).order_rank()[0, :, 0]
    assert ranks.tolist() == [0, 1, 2, 5, 6, 3, 4]


def test_random_ordering_is_a_seeded_permutation_with_channels_innermost():
    ranks = _made((3, 4, 4), 2, {"ordering": "random", "order_seed": 5}).order_rank()
    assert sorted(ranks.flatten().tolist()) == list(range(48))
    assert torch.equal(ranks[1] - ranks[0], torch.ones(4, 4, dtype=torch.long))
    assert torch.equal(ranks[2] - ranks[0], torch.full((4, 4), 2))
    assert torch.equal(ranks, _made((3, 4, 4), 2, {"ordering": "random", "order_seed": 5}).order_rank())
    assert not torch.equal(ranks, _made((3, 4, 4), 2, {"ordering": "random", "order_seed": 6}).order_rank())


def test_colour_ranks_under_raster():
    ranks = _made((3, 1, 2), 2).order_rank()
    assert ranks[:, 0].tolist() == [[0, 3], [1, 4], [2, 5]]


def test_mask_set_zero_does_not_depend_on_n_masks():
    one = _made((1, 3, 3), 2, {"ordering": "random"})
    many = _made((1, 3, 3), 2, {"ordering": "random", "n_masks": 3, "resample_order": True})
    assert torch.equal(one.order_rank(), many.order_rank(0))
    assert torch.equal(one.out.masks[0], many.out.masks[0])
    assert not torch.equal(many.order_rank(0), many.order_rank(1))
    shared = _made((1, 3, 3), 2, {"n_masks": 3})
    assert all(torch.equal(shared.order_rank(m), shared.order_rank(0)) for m in range(3))
    assert not torch.equal(shared.out.masks[0], shared.out.masks[1])  # new hidden degrees


# ----- exact normalization and the autoregressive property -----------------------------------------
@pytest.mark.parametrize("shape, levels, options", CASES)
@pytest.mark.parametrize("extra", [{"ordering": o} for o in ORDERINGS] + MIXTURES)
def test_exact_normalization(shape, levels, options, extra):
    model = _randomized(_made(shape, levels, options | extra)).eval()
    log_p = model.log_prob(all_images(*shape, levels))
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-5)


def _dependencies(model, mask):
    """deps[t, s] = True when some logit of the sub-pixel of rank t depends on the input of rank s."""
    c, h, w = model.shape
    inputs = torch.randn(64, c, h, w, dtype=torch.float64, requires_grad=True)
    rank = model.order_rank(mask)
    logits = model.params_from_input(inputs, mask=mask)  # (64, C, K, H, W)
    deps = torch.zeros(model.dim, model.dim, dtype=torch.bool)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                (grad,) = torch.autograd.grad(logits[:, ch, :, i, j].pow(2).sum(), inputs, retain_graph=True)
                deps[rank[ch, i, j], rank[(grad != 0).any(0)]] = True
    return deps


def _paths(model, mask):
    """paths[t, s] = True when a path of unmasked weights leads from the input of rank s to an
    output of the sub-pixel of rank t."""
    reach = model.out.masks[mask].double()
    for layer in reversed(model.hidden):
        reach = reach @ layer.masks[mask].double()
    reach = reach.view(model.dim, model.outputs_per_dim, model.dim).sum(1) > 0  # (out dim, in dim)
    rank = model.order_rank(mask).flatten()
    paths = torch.zeros_like(reach)
    paths[rank[:, None], rank[None, :]] = reach
    return paths


@pytest.mark.parametrize("shape, levels, options", CASES + [((2, 3, 2), 3, {})])
@pytest.mark.parametrize("extra", [{"ordering": o} for o in ORDERINGS] + MIXTURES)
def test_autoregressive_property(shape, levels, options, extra):
    """Sub-pixel t never reads an input ranked >= t (autograd), and reads the one just before it."""
    model = _randomized(_made(shape, levels, options | extra | {"hidden_sizes": [64, 64]})).eval()
    for mask in range(model.n_masks):
        deps = _dependencies(model, mask)
        assert not torch.triu(deps).any()
        assert deps.diagonal(-1).float().mean() > 0.7  # a dead ReLU path can hide a few
        # with 64 units per layer the masks leave a path from every earlier input
        assert torch.equal(_paths(model, mask), torch.ones_like(deps).tril(-1))


def test_mask_sets_differ_in_connectivity():
    """Small layers leave some connections out, differently in each mask set."""
    model = _randomized(_made((1, 3, 3), 2, {"hidden_sizes": [4], "n_masks": 3})).eval()
    deps = [_dependencies(model, m) for m in range(3)]
    assert all(not torch.triu(d).any() for d in deps)
    assert not (torch.equal(deps[0], deps[1]) and torch.equal(deps[1], deps[2]))


# ----- sampling ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, levels, options", CASES + [((2, 3, 3), 5, {"output_rank": 3})])
@pytest.mark.parametrize("ordering", ORDERINGS)
def test_sampling_equals_the_reference_sampler(shape, levels, options, ordering):
    model = _randomized(_made(shape, levels, options | {"ordering": ordering})).eval()
    fast = model.sample(16, temperature=0.9, generator=torch.Generator().manual_seed(4))
    slow = AutoregressiveImageModel.sample(model, 16, None, 0.9, torch.Generator().manual_seed(4))
    assert torch.equal(fast, slow)
    assert fast.shape == (16, *shape) and fast.min() >= 0 and fast.max() < levels


def test_training_mode_sampling_uses_the_current_mask_set():
    model = _randomized(_made((1, 2, 3), 3, {"n_masks": 3, "resample_order": True})).train()
    model.log_prob(torch.zeros(1, 1, 2, 3, dtype=torch.long))  # the cycle moves on to set 1
    assert model.active_mask() == 1
    fast = model.sample(16, generator=torch.Generator().manual_seed(1))
    slow = AutoregressiveImageModel.sample(model, 16, None, 1.0, torch.Generator().manual_seed(1))
    assert torch.equal(fast, slow)


def _frequencies_match(model, shape, label=None):
    images = all_images(*shape, 2)
    cond = None if label is None else torch.full((len(images),), label)
    probs = model.log_prob(images, cond).exp()
    samples = model.sample(
        20000,
        cond=label if label is None else torch.tensor(label),
        generator=torch.Generator().manual_seed(0),
    )
    freq = torch.bincount(_codes(samples), minlength=len(images)).double() / len(samples)
    assert torch.allclose(freq[_codes(images)], probs, atol=0.015)


def test_mixture_samples_follow_the_mixture():
    model = _randomized(_made((1, 2, 2), 2, {"n_masks": 3, "resample_order": True})).eval()
    _frequencies_match(model, (1, 2, 2))


def test_greedy_sampling_and_empty_batch():
    model = _randomized(_made((2, 2, 2), 4)).eval()
    x = model.sample(3, temperature=0.0)
    assert torch.equal(x, model.params_from_input(model.scale_input(x)).argmax(2))
    assert model.sample(0).shape == (0, 2, 2, 2)


# ----- class conditioning --------------------------------------------------------------------------
def test_conditional_log_prob_and_samples_use_the_label():
    model = _randomized(_made((1, 2, 2), 2, {"n_classes": 3})).eval()
    x = all_images(1, 2, 2, 2)
    by_label = [model.log_prob(x, torch.full((len(x),), y)) for y in range(3)]
    assert not torch.allclose(by_label[0], by_label[1])
    assert torch.logsumexp(by_label[2], 0).item() == pytest.approx(0.0, abs=1e-5)
    _frequencies_match(model, (1, 2, 2), label=2)
    with pytest.raises(DensitylabError, match="class-conditional"):
        model.log_prob(x)
    with pytest.raises(DensitylabError, match="0..2"):
        model.log_prob(x, torch.full((len(x),), 3))


def test_label_bias_starts_at_zero():
    model = _made((1, 2, 2), 2, {"n_classes": 3})
    x = all_images(1, 2, 2, 2)
    assert torch.equal(
        model.log_prob(x, torch.zeros(16, dtype=torch.long)), model.log_prob(x, torch.full((16,), 2))
    )


# ----- anchors, initialisation, mask cycling ---------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 256])
def test_uniform_anchor_is_exactly_log2_k(levels):
    model = build_model("made", (1, 4, 4), levels, {"hidden_sizes": [32]})
    assert model.direct == (levels <= model.config.output_rank)
    with torch.no_grad():
        model.output_weight().zero_()
        model.output_bias().zero_()
    x = torch.randint(0, levels, (5, 1, 4, 4))
    assert model.bits_per_dim(x).tolist() == pytest.approx([math.log2(levels)] * 5, abs=1e-6)


def test_data_initialization_starts_from_the_marginal_histogram():
    model = _randomized(_made((3, 2, 3), 5, {"output_rank": 2})).float()
    x = torch.randint(0, 5, (50, 3, 2, 3))
    model.initialize_from_data(x)
    counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=5) for c in range(3)])
    log_freq = torch.log((counts + 1.0) / (counts + 1.0).sum(1, keepdim=True))
    expected = sum(log_freq[c][x[:, c]].flatten(1).sum(1) for c in range(3))
    assert torch.allclose(model.log_prob(x), expected.float(), atol=1e-4)
    # the output features still get gradients: U was left random
    model.log_prob(x).sum().backward()
    assert model.output_weight().grad.abs().sum() > 0


def test_training_mode_cycles_the_mask_sets_and_checkpoints_keep_the_cycle(tmp_path):
    model = _randomized(_made((1, 2, 2), 2, {"n_masks": 3})).train()
    x = all_images(1, 2, 2, 2)
    values = []
    for _ in range(4):
        values.append(model.log_prob(x))
    assert int(model.mask_step) == 4 and model.active_mask() == 1
    assert not torch.allclose(values[0], values[1]) and not torch.allclose(values[1], values[2])
    assert torch.equal(values[0], values[3])
    model.eval()
    mixture = model.log_prob(x)
    assert int(model.mask_step) == 4  # evaluation does not move the cycle
    assert torch.allclose(mixture, torch.logsumexp(torch.stack(values[:3]), 0) - math.log(3))

    ckpt.save_checkpoint(tmp_path / "made.safetensors", model)
    restored, _ = ckpt.model_from_checkpoint(tmp_path / "made.safetensors")
    assert int(restored.mask_step) == 4
    assert torch.allclose(restored.double().eval().log_prob(x), mixture)


def test_bad_options_raise():
    with pytest.raises(DensitylabError, match="ordering"):
        build_model("made", (1, 4, 4), 2, {"ordering": "spiral"})
    with pytest.raises(DensitylabError, match="hidden_sizes"):
        build_model("made", (1, 4, 4), 2, {"hidden_sizes": []})
    with pytest.raises(DensitylabError, match="n_masks"):
        build_model("made", (1, 4, 4), 2, {"n_masks": 0})
    assert build_model("made", (1, 4, 4), 2, {"hidden_sizes": 8}).config.hidden_sizes == [8]
