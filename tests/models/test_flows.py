"""One suite over every registered flow model, in the manner of zuko's test_flows: log_prob shapes,
gradients, invertibility of the data <-> latent map, log-det vs the autograd Jacobian, save/load
through densitylab's checkpoints, sampling, and the uniform anchor where a configuration makes the
density uniform. Tolerances (float64): inverse within 1e-6, log-det within 1e-5 (FFJORD's ODE solve:
1e-4). Each model's own test file checks its transforms in detail."""

from __future__ import annotations

import math

import pytest
import torch

from densitylab import build_model
from densitylab.models.registry import available_models
from densitylab.train.checkpoint import model_from_checkpoint, save_checkpoint
from tests.models.flow_checks import randomize_

IMAGE = ((1, 4, 4), 8)
VECTOR = ((3,), 0)
TINY: dict[str, dict] = {
    "realnvp": {"n_scales": 2, "couplings_per_mask": 2, "final_couplings": 2, "hidden_channels": 8},
    "nice": {"couplings": 4, "hidden_features": 16, "hidden_layers": 2},
    "realnvp_vector": {"couplings": 3, "hidden_features": 16, "hidden_layers": 1},
    "glow_vector": {"steps": 2, "hidden_features": 16},
    "glow": {"n_scales": 2, "steps_per_scale": 2, "hidden_channels": 8},
    "maf": {"n_transforms": 2, "hidden_sizes": [16, 16]},
    "iaf": {"n_transforms": 2, "hidden_sizes": [16, 16]},
    "cdf1d": {"n_components": 3},
    "arflow": {"n_components": 3, "hidden": 16},
    "ffjord": {"hidden": 16, "n_layers": 2, "hidden_channels": 8, "conv_layers": 1, "squeeze": 1,
               "rtol": 1e-7, "atol": 1e-7},
}
# Configurations whose density is exactly uniform on [0, 1)^D at initialisation (identity
# transforms, logit with alpha = 0, logistic prior): they must score exactly log2 K bits/dim.
UNIFORM = {name: {"prior": "logistic", "alpha": 0.0} for name in ("realnvp", "nice", "maf", "iaf")}
FLOWS = sorted(name for name, info in available_models().items() if info.family == "flow")
CASES = [(name, kind) for name in FLOWS for kind, (shape, _) in (("image", IMAGE), ("vector", VECTOR))
         if ("image" if len(shape) == 3 else "vector") in available_models()[name].data_kinds]


def test_every_flow_has_a_tiny_configuration():
    assert set(FLOWS) <= set(TINY), f"add tiny configs for {set(FLOWS) - set(TINY)}"


def _model(name: str, kind: str, **extra):
    shape, levels = IMAGE if kind == "image" else VECTOR
    model = build_model(name, shape, levels, TINY[name] | extra).double()
    data = _data(kind, 32)
    model.initialize_from_data(data)
    return randomize_(model, 0.05).eval()


def _data(kind: str, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    if kind == "image":
        return torch.randint(0, IMAGE[1], (n, *IMAGE[0]), generator=gen)
    return torch.randn((n, *VECTOR[0]), generator=gen, dtype=torch.float64)


def _points(model, kind: str, n: int) -> torch.Tensor:
    """Points of the continuous space the flow's density lives on."""
    x = _data(kind, n)
    return model.dequantize(x, torch.Generator().manual_seed(2)).double() if kind == "image" else x


def _tolerance(name: str) -> float:
    return 1e-4 if name == "ffjord" else 1e-5


@pytest.mark.parametrize("name, kind", CASES)
def test_log_prob_shape_and_gradients(name, kind):
    model = _model(name, kind).train()
    x = _data(kind, 6)
    log_p = model.log_prob(x, generator=torch.Generator().manual_seed(0))
    assert log_p.shape == (6,) and torch.isfinite(log_p).all()
    model.zero_grad()
    (-log_p.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("name, kind", CASES)
def test_latent_map_is_invertible_and_logdet_matches_jacobian(name, kind):
    model = _model(name, kind)
    y = _points(model, kind, 2)
    with torch.no_grad():
        z, logabsdet = model(y)
        y_back, logabsdet_inverse = model.inverse(z)
    tol = _tolerance(name)
    assert torch.allclose(y_back.reshape(y.shape), y, atol=tol * 10)
    assert torch.allclose(logabsdet, -logabsdet_inverse, atol=tol * 100)
    for i in range(len(y)):
        jac = torch.autograd.functional.jacobian(
            lambda v: model(v.view(1, *y.shape[1:]))[0].reshape(-1), y[i].reshape(-1))
        assert logabsdet[i].item() == pytest.approx(torch.linalg.slogdet(jac)[1].item(), abs=tol * 100)


@pytest.mark.parametrize("name, kind", CASES)
def test_checkpoint_round_trip_and_sampling(name, kind, tmp_path):
    model = _model(name, kind)
    save_checkpoint(tmp_path / "m.safetensors", model)
    loaded, _ = model_from_checkpoint(tmp_path / "m.safetensors", torch.device("cpu"))
    loaded = loaded.double().eval()
    x = _data(kind, 4)
    expected = model.log_prob(x, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loaded.log_prob(x, generator=torch.Generator().manual_seed(3)), expected)
    samples = loaded.sample(5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, *model.shape)
    if kind == "image":
        assert samples.dtype == torch.long and samples.min() >= 0 and samples.max() < model.levels
    else:
        assert samples.dtype.is_floating_point and torch.isfinite(samples).all()


@pytest.mark.parametrize("name", sorted(UNIFORM))
def test_uniform_configuration_scores_exactly_log2_levels(name):
    levels = 16
    model = build_model(name, (1, 4, 4), levels, TINY[name] | UNIFORM[name]).double().eval()
    x = torch.randint(0, levels, (8, 1, 4, 4))
    bpd = model.bits_per_dim(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(bpd, torch.full_like(bpd, math.log2(levels)), atol=1e-9)


def test_a_non_finite_sample_is_an_error_not_an_image(monkeypatch):
    from densitylab.errors import DensitylabError

    model = build_model("nice", (1, 4, 4), 8, TINY["nice"])
    overflow = torch.zeros(3, 1, 4, 4)
    overflow[1, 0, 2, 2] = float("inf")  # what an inverse that overflowed returns
    monkeypatch.setattr(model, "rsample", lambda n, *args, **kwargs: overflow[:n])
    with pytest.raises(DensitylabError, match="1 of 3 samples came out non-finite"):
        model.sample(3)


def test_a_float32_overflow_is_sampled_again_in_float64():
    """A huge contraction (log-scale -100: exp(100) overflows float32) inverted on prior noise: the
    float32 pass gives inf - inf = NaN in the couplings; the same noise through a float64 copy
    gives the exact samples, pixels at the edges of the range."""
    torch.manual_seed(0)
    model = randomize_(build_model("nice", (1, 2, 2), 8, TINY["nice"]), 0.3)
    with torch.no_grad():
        model.transform.transforms[-1].log_scale.fill_(-100.0)
    raw = model.rsample(4, generator=torch.Generator().manual_seed(5))
    assert not torch.isfinite(raw).all()  # the float32 pass overflows
    samples = model.sample(4, generator=torch.Generator().manual_seed(5))
    expected = model.double().sample(4, generator=torch.Generator().manual_seed(5))
    assert samples.dtype == torch.long and torch.equal(samples, expected)
