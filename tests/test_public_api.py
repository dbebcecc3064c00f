"""The public contract of every registered model, in the conventions of torch.distributions: a
loaded model is in eval mode, ``log_prob`` changes no parameter (data-dependent initialisation is
the explicit ``initialize``), ``sample`` takes an int or a shape, flows' ``rsample`` passes gradients
to the parameters, and an unconditional model refuses a ``cond`` with the same DensitylabError."""

from __future__ import annotations

import pytest
import torch

import densitylab as dl
from densitylab.errors import DensitylabError
from densitylab.models.registry import available_models
from densitylab.train.checkpoint import save_checkpoint
from tests.models.flow_checks import randomize_
from tests.models.test_autoregressive import TINY_GATED, TINY_MADE, TINY_PIXELCNN, TINY_RNN, TINY_WAVENET
from tests.models.test_flows import TINY as TINY_FLOWS

TINY = TINY_FLOWS | {"pixelcnn": TINY_PIXELCNN, "gated_pixelcnn": TINY_GATED, "wavenet": TINY_WAVENET,
                     "rnn": TINY_RNN, "made": TINY_MADE | {"n_masks": 2}}
MODELS = sorted(available_models())


def _data(name: str) -> tuple[tuple[int, ...], int, torch.Tensor]:
    """A small batch of the kind of data the model takes (images if it can)."""
    kinds = available_models()[name].data_kinds
    if "image" in kinds:
        return (1, 4, 4), 4, torch.randint(0, 4, (6, 1, 4, 4))
    return (2,), 0, torch.randn(6, 2, dtype=torch.float64)


def _model(name: str) -> tuple[dl.DensityModel, torch.Tensor]:
    shape, levels, x = _data(name)
    torch.manual_seed(0)
    model = dl.build_model(name, shape, levels, TINY[name])
    if levels == 0:
        model = model.double()
    return model, x


def test_every_model_has_a_tiny_configuration():
    assert set(MODELS) <= set(TINY), f"add tiny configs for {set(MODELS) - set(TINY)}"


@pytest.mark.parametrize("name", MODELS)
def test_load_returns_an_eval_mode_model_with_the_same_log_prob(name, tmp_path):
    model, x = _model(name)
    model.initialize(x)
    randomize_(model, 0.05)
    save_checkpoint(tmp_path / "model.safetensors", model)
    loaded = dl.load(tmp_path / "model.safetensors")
    assert not loaded.training
    assert bool(loaded.initialized)  # the checkpoint records the data-dependent init
    model.eval()
    generator = lambda: torch.Generator().manual_seed(3)  # noqa: E731 (the same noise for both)
    with torch.no_grad():
        expected = model.log_prob(x, generator=generator())
        got = loaded.to(expected.dtype).log_prob(x, generator=generator())
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_log_prob_changes_no_parameter(name, mode):
    model, x = _model(name)
    model.train(mode == "train")
    before = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        first = model.log_prob(x, generator=torch.Generator().manual_seed(0))
        model.log_prob(x[:2] + 0, generator=torch.Generator().manual_seed(1))  # another batch first
        again = model.log_prob(x, generator=torch.Generator().manual_seed(0))
    for key, value in model.named_parameters():
        assert torch.equal(value, before[key]), f"log_prob changed {key}"
    if mode == "eval":
        assert torch.allclose(first, again)


@pytest.mark.parametrize("name", MODELS)
def test_sample_takes_an_int_or_a_shape(name):
    model, x = _model(name)
    model.initialize(x).eval()
    generator = torch.Generator().manual_seed(0)
    assert model.sample(3, generator=generator).shape == (3, *model.shape)
    assert model.sample((2, 2), generator=generator).shape == (2, 2, *model.shape)
    one = model.sample(generator=generator)
    assert one.shape == model.shape
    assert one.dtype == (torch.long if model.levels else model.dtype)


@pytest.mark.parametrize("name", [n for n in MODELS if available_models()[n].family == "flow"])
def test_rsample_passes_gradients_to_the_parameters(name):
    model, x = _model(name)
    randomize_(model.initialize(x), 0.05)
    y = model.rsample((2, 3), generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, *model.shape) and y.requires_grad
    y.square().sum().backward()
    reached = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached, "no parameter gets a gradient from rsample"


@pytest.mark.parametrize("name", MODELS)
def test_unconditional_models_refuse_cond_with_one_error(name):
    model, x = _model(name)
    with pytest.raises(DensitylabError, match="unconditional"):
        model.log_prob(x, torch.zeros(len(x), dtype=torch.long))
    with pytest.raises(DensitylabError, match="unconditional"):
        model.sample(2, torch.zeros(2, dtype=torch.long))


def test_initialize_is_explicit_and_happens_once():
    model, x = _model("glow")
    assert not bool(model.initialized)
    model.initialize(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.initialize(torch.randint(0, 4, (6, 1, 4, 4)))  # a second call changes nothing
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
