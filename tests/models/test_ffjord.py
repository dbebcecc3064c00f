"""FFJORD and its continuous normalizing flow (``models/flows/cnf.py``, ``ffjord.py``).

Tolerances (the ODE is solved numerically, so every oracle is up to the solver's error):
``inverse(forward(x))`` within 1e-4 with rtol = atol = 1e-7 in float64; the exact-trace
log-determinant within 1e-4 of ``slogdet`` of the autograd Jacobian (rtol = atol = 1e-8,
float64); the 2D density's grid integral within 2e-2 of 1; the Hutchinson mean within 4
standard errors of the exact trace. Nets are tiny so the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from densitylab import build_model
from densitylab.config import RunConfig
from densitylab.models.flows.cnf import (
    CNF,
    ConcatConvNet,
    ConcatSquashMLP,
    draw_noise,
    exact_trace,
    exact_trace_and_frobenius,
    hutchinson_trace,
    hutchinson_trace_and_frobenius,
)
from densitylab.models.flows.ffjord import cnf_blocks, nfe
from densitylab.train.trainer import Trainer
from tests.models.flow_checks import (
    check_gradients,
    check_invertible,
    check_logdet,
    check_save_load,
    check_shapes,
    randomize_,
)

TINY = {"hidden": 16, "n_layers": 2}
TINY_IMAGE = {"hidden_channels": 8, "conv_layers": 1, "rtol": 1e-3, "atol": 1e-3}


def _cnf(dim: int = 2, std: float = 0.3, tol: float = 1e-7, **kwargs) -> CNF:
    net = randomize_(ConcatSquashMLP(dim, 16, 2, "tanh"), std=std)
    return CNF(net, rtol=tol, atol=tol, **kwargs).double()


def _model(shape=(2,), levels=0, std=0.2, **overrides) -> torch.nn.Module:
    model = build_model("ffjord", shape, levels, TINY | overrides)
    return randomize_(model, std=std)


def test_shapes_and_sample_types():
    x = torch.randn(5, 2, dtype=torch.float64)
    check_shapes(_cnf(tol=1e-5), x)
    images = CNF(randomize_(ConcatConvNet(3, 8, 1)), rtol=1e-3, atol=1e-3)
    check_shapes(images, torch.randn(2, 3, 4, 4))

    vector = _model()
    assert vector.log_prob(torch.randn(7, 2)).shape == (7,)
    assert vector.sample(4).shape == (4, 2) and vector.sample(4).dtype.is_floating_point
    image = build_model("ffjord", (1, 4, 4), 4, TINY_IMAGE)
    assert image.latent_shape() == (16, 1, 1)  # two squeezes: 1x4x4 -> 16x1x1
    x = torch.randint(0, 4, (3, 1, 4, 4))
    assert image.log_prob(x).shape == (3,)
    samples = image.sample(5)
    assert samples.shape == (5, 1, 4, 4) and samples.dtype == torch.long
    assert int(samples.min()) >= 0 and int(samples.max()) <= 3


def test_inverse_of_forward_is_identity():
    """rtol = atol = 1e-7, float64: x recovered within 1e-4, log-dets cancel within 1e-3 (for
    the Hutchinson trace when both solves use the same noise)."""
    x = torch.randn(6, 3, dtype=torch.float64)
    check_invertible(_cnf(3, trace="exact"), x, atol=1e-4)
    cnf = _cnf(3, trace="hutchinson")
    cnf.generator = torch.Generator().manual_seed(0)
    z, logdet = cnf(x)
    cnf.generator = torch.Generator().manual_seed(0)
    x_back, logdet_back = cnf.inverse(z)
    assert torch.allclose(x_back, x, atol=1e-4)
    assert torch.allclose(logdet, -logdet_back, atol=1e-3)
    model = _model((1, 4, 4), levels=16, **TINY_IMAGE | {"rtol": 1e-7, "atol": 1e-7, "trace": "exact"})
    model = model.double()
    y = torch.rand(3, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(y)
    y_back, logdet_back = model.inverse(z)
    assert torch.allclose(y_back, y, atol=1e-4)
    assert torch.allclose(logdet, -logdet_back, atol=1e-3)


def test_exact_trace_logdet_matches_autograd_jacobian():
    """D = 2 (and 3): the integrated exact trace equals slogdet of d z(T) / d x within 1e-4."""
    for dim in (2, 3):
        cnf = _cnf(dim, std=0.5, tol=1e-8, trace="exact")
        check_logdet(cnf, torch.randn(2, dim, dtype=torch.float64), atol=1e-4)
    # the learnable end time and the rescaled-time dynamics: T = 1.7
    cnf = _cnf(2, std=0.5, tol=1e-8, trace="exact", end_time=1.7, learn_end_time=True)
    check_logdet(cnf, torch.randn(2, 2, dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize("act", ["tanh", "softplus"])
@pytest.mark.parametrize("dim", [2, 3])
def test_forward_mode_trace_matches_autograd(act, dim):
    """The MLP's forward-mode trace equals the sum of the autograd diagonal entries, and the
    gradients of both with respect to the parameters and the input agree (float64)."""
    net = randomize_(ConcatSquashMLP(dim, 16, 2, act), std=0.7).double()
    t = torch.tensor(0.4, dtype=torch.float64)
    z = (3 * torch.randn(6, dim, dtype=torch.float64)).requires_grad_(True)
    f, jacobian = net.forward_with_jacobian(t, z)
    trace = jacobian.diagonal(dim1=1, dim2=2).sum(1)
    f_ref = net(t, z)
    trace_ref = exact_trace(f_ref, z, create_graph=True)
    assert torch.allclose(f, f_ref, atol=1e-12)
    assert torch.allclose(trace, trace_ref, atol=1e-10)
    inputs = [z, *net.parameters()]
    grads = torch.autograd.grad((trace.square().sum() + f.sum()), inputs)
    grads_ref = torch.autograd.grad((trace_ref.square().sum() + f_ref.sum()), inputs)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert torch.allclose(g, g_ref, atol=1e-9)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(noise):
    """At one time point, the mean of e^T (df/dz) e over many draws of e is within 4 standard
    errors of the exact trace (D = 5; the net's Jacobian has large off-diagonal entries)."""
    dim, draws = 5, 20000
    net = randomize_(ConcatSquashMLP(dim, 16, 2, "softplus"), std=0.5).double()
    point = torch.randn(1, dim, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    z = point.repeat(draws, 1).requires_grad_(True)
    f = net(t, z)
    exact = exact_trace(f[:1], z, create_graph=False)  # rows are independent: row 0 suffices
    gen = torch.Generator().manual_seed(0)
    estimates = hutchinson_trace(f, z, draw_noise(noise, z, gen), create_graph=False)
    mean, stderr = estimates.mean(), estimates.std() / math.sqrt(draws)
    assert stderr > 0
    assert abs(mean - exact[0]) < 4 * stderr, (float(mean), float(exact[0]), float(stderr))


def test_trace_policy():
    cnf = CNF(ConcatSquashMLP(2, 8, 1))
    assert cnf.use_exact_trace(2) and cnf.use_exact_trace(4)  # small D: always exact
    assert not cnf.use_exact_trace(64)
    cnf.eval()
    assert cnf.use_exact_trace(16) and not cnf.use_exact_trace(64)  # eval: exact when affordable
    assert not CNF(ConcatSquashMLP(2, 8, 1), trace="hutchinson").use_exact_trace(2)
    assert CNF(ConcatSquashMLP(2, 8, 1), trace="exact").use_exact_trace(784)


@pytest.mark.parametrize("adjoint", [False, True])
@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_gradients_reach_every_parameter(adjoint, trace):
    model = _model(adjoint=adjoint, trace=trace, learn_end_time=True, rtol=1e-4, atol=1e-4)
    x = torch.randn(16, 2)
    check_gradients(model, -model.log_prob(x, generator=torch.Generator().manual_seed(0)).mean())


def test_adjoint_gradients_match_backpropagation():
    """Same loss, same Hutchinson noise: the adjoint's gradients equal those of backpropagating
    through the solver (float64, rtol = atol = 1e-8) within 1e-4 relative."""
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        model = _model(adjoint=adjoint, trace="hutchinson", learn_end_time=True,
                       rtol=1e-8, atol=1e-8).double()
        x = torch.randn(8, 2, dtype=torch.float64)
        loss = -model.log_prob(x, generator=torch.Generator().manual_seed(1)).mean()
        grads.append(torch.autograd.grad(loss, list(model.parameters())))
    for direct, adjoint in zip(*grads, strict=True):
        assert torch.allclose(direct, adjoint, rtol=1e-4, atol=1e-6), (direct - adjoint).abs().max()


def test_zero_dynamics_is_the_base_density():
    model = build_model("ffjord", (2,), 0, TINY)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(10, 2)
    expected = -0.5 * x.pow(2).sum(1) - math.log(2 * math.pi)
    assert torch.allclose(model.log_prob(x), expected, atol=1e-6)


@pytest.mark.parametrize("dim", [1, 2])
def test_density_integrates_to_one(dim):
    """Exact trace, midpoint rule on [-7, 7]^D: the density's mass is 1 within 2e-2."""
    model = _model((dim,), std=0.5).double().eval()  # log-dets of 0.1..0.6 nats: a real warp
    n = 2000 if dim == 1 else 141
    edges = torch.linspace(-7, 7, n + 1, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    cell = (14 / n) ** dim
    points = torch.cartesian_prod(centres, centres) if dim == 2 else centres[:, None]
    with torch.no_grad():
        mass = model.log_prob(points).exp().sum() * cell
    assert cnf_blocks(model)[0].use_exact_trace(dim)
    assert abs(float(mass) - 1) < 2e-2, float(mass)


def test_nfe_is_recorded_and_logged():
    model = _model(trace="hutchinson", adjoint=True, rtol=1e-4, atol=1e-4)
    loss = -model.log_prob(torch.randn(8, 2)).mean()
    metrics = model.step_metrics()
    assert metrics["nfe_forward"] > 0 and metrics["nfe_backward"] == 0
    loss.backward()
    metrics = model.step_metrics()
    assert metrics["nfe_forward"] > 0 and metrics["nfe_backward"] > 0
    model.sample(3)
    assert nfe(model)["inverse"] > 0
    direct = _model()
    direct.log_prob(torch.randn(4, 2))
    assert set(direct.step_metrics()) == {"nfe_forward"} and direct.step_metrics()["nfe_forward"] > 0
    fixed = _model(solver="rk4", step_size=0.25)
    fixed.log_prob(torch.randn(4, 2))
    assert nfe(fixed)["forward"] == 4 * 4  # 4 rk4 steps of 4 evaluations


def test_frobenius_terms_match_the_autograd_jacobian():
    """||df/dz||_F^2: forward mode and the autograd rows equal the full Jacobian's; Hutchinson's
    ||e^T J||^2 averages to it within 4 standard errors."""
    dim = 3
    net = randomize_(ConcatSquashMLP(dim, 16, 2, "softplus"), std=0.6).double()
    t = torch.tensor(0.3, dtype=torch.float64)
    point = torch.randn(1, dim, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda z: net(t, z)[0], point[0])
    truth = jacobian.square().sum()
    _, forward_jacobian = net.forward_with_jacobian(t, point)
    assert torch.allclose(forward_jacobian[0].T, jacobian, atol=1e-12)  # [d, i] = df_i/dz_d
    z = point.clone().requires_grad_(True)
    trace, frobenius = exact_trace_and_frobenius(net(t, z), z, create_graph=False)
    assert torch.allclose(frobenius[0], truth, atol=1e-12)
    assert torch.allclose(trace[0], jacobian.diagonal().sum(), atol=1e-12)
    draws = 20000
    z = point.repeat(draws, 1).requires_grad_(True)
    noise = draw_noise("rademacher", z, torch.Generator().manual_seed(1))
    _, estimates = hutchinson_trace_and_frobenius(net(t, z), z, noise, create_graph=False)
    stderr = estimates.std() / math.sqrt(draws)
    assert abs(estimates.mean() - truth) < 4 * stderr, (float(estimates.mean()), float(truth))


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_rnode_penalty_integrates_kinetic_energy_and_jacobian_norm(trace):
    """A single concat-squash layer f = (W z + b) g(t) + c t (g = sigmoid(w_g t + b_g)): its
    Jacobian is W g(t), so int_0^T ||J||_F^2 dt = ||W||_F^2 int g^2 dt exactly, and the kinetic
    energy int ||f(z(t), t)||^2 dt is checked against quadrature along the dopri5 trajectory.
    Training mode only; handed over once; the log-density is the unregularized one."""
    torch.manual_seed(0)
    net = randomize_(ConcatSquashMLP(2, 0, 0), std=0.5).double()  # widths [2, 2]: one layer
    cnf = CNF(net, rtol=1e-9, atol=1e-9, trace=trace, kinetic_weight=0.3,
              jacobian_weight=0.7).double()
    x = torch.randn(1 if trace == "exact" else 4000, 2, dtype=torch.float64)
    z, logdet = cnf(x)
    penalty = cnf.training_penalty()
    assert penalty is not None and cnf.training_penalty() is None  # handed over once
    plain = CNF(net, rtol=1e-9, atol=1e-9, trace=trace).double()
    assert torch.allclose(plain(x[:1])[0], z[:1], atol=1e-10)

    times = torch.linspace(0, 1, 4001, dtype=torch.float64)
    layer = net.layers[0].requires_grad_(False)
    gates = torch.sigmoid(layer.gate(times[:, None]))  # (T, 2)
    weight = layer.layer.weight
    jac_rate = (gates[:, :, None] * weight).square().sum((1, 2))  # ||diag(g) W||_F^2 per time
    jacobian_integral = torch.trapezoid(jac_rate, times)
    from torchdiffeq import odeint

    path = odeint(lambda t, y: net(t, y), x[:1], times, rtol=1e-10, atol=1e-10)  # (T, 1, 2)
    speeds = torch.stack([net(t, y).square().sum() for t, y in zip(times, path[:, 0:1], strict=True)])
    kinetic_integral = torch.trapezoid(speeds, times)
    expected = 0.3 * kinetic_integral + 0.7 * jacobian_integral
    metrics = cnf.step_metrics()
    assert {"kinetic_energy", "jacobian_frobenius"} <= set(metrics)
    if trace == "exact":
        assert torch.allclose(penalty[0], expected, rtol=1e-6), (float(penalty[0]), float(expected))
    else:  # the kinetic part is exact per example; the Jacobian part is a Hutchinson estimate
        assert abs(metrics["jacobian_frobenius"] - float(jacobian_integral)) < 0.05 * float(jacobian_integral)
    cnf.eval()
    cnf(x[:2])
    assert cnf.training_penalty() is None  # evaluation never regularizes


def test_rnode_penalty_is_trained_on_but_not_reported(tmp_path):
    """The same first batch and initialisation: the reported training loss is the same with and
    without the penalty, the parameters after the step are not."""
    losses, weights = [], []
    for weight in (0.0, 1.0):
        config = RunConfig(model="ffjord", data="moons", model_config=TINY | {
                               "solver": "rk4", "step_size": 0.5, "kinetic_weight": weight,
                               "jacobian_weight": weight},
                           epochs=1 / (20000 // 64), batch_size=64, eval_every=1000,
                           checkpoint_every=1000, log_every=1, sample_count=0, threads=1,
                           warmup_steps=1)
        trainer = Trainer(config, tmp_path / f"run{weight}", progress=False)
        trainer.model.initialize(trainer.train_images[:64])
        losses.append(trainer.train_step(*trainer.next_batch()))
        weights.append(torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
        if weight:
            assert trainer.model.step_metrics()["kinetic_energy"] > 0
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert not torch.allclose(weights[0], weights[1])


def test_hutchinson_noise_comes_from_the_generator():
    model = _model(trace="hutchinson")
    x = torch.randn(6, 2)
    first = model.log_prob(x, generator=torch.Generator().manual_seed(3))
    again = model.log_prob(x, generator=torch.Generator().manual_seed(3))
    other = model.log_prob(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_save_load_round_trip():
    model = _model().double().eval()
    x = torch.randn(5, 2, dtype=torch.float64)

    def make():
        return build_model("ffjord", (2,), 0, TINY).double().eval()

    check_save_load(model, make, lambda m: m.log_prob(x))


def test_training_on_moons_writes_results(tmp_path):
    config = RunConfig(model="ffjord", model_config=TINY | {"rtol": 1e-4, "atol": 1e-4},
                       data="moons", epochs=3 / (20000 // 256), batch_size=256, eval_every=1000,
                       checkpoint_every=1000, log_every=1, sample_count=4, threads=1,
                       warmup_steps=1)
    results = Trainer(config, tmp_path / "run", progress=False).fit()
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 3
    assert math.isfinite(saved["test_nats_per_dim"]) and 0 < saved["test_nats_per_dim"] < 5
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["nfe_forward"] for r in records if "train_npd" in r] and all(
        r["nfe_forward"] > 0 for r in records if "train_npd" in r)


def test_image_step_on_digits_gives_finite_bits_per_dim(tmp_path):
    config = RunConfig(model="ffjord", model_config=TINY_IMAGE, data="digits",
                       epochs=2 / (1500 // 64), batch_size=64, eval_every=1000,
                       checkpoint_every=1000, log_every=1, sample_count=4, threads=1,
                       warmup_steps=1)
    results = Trainer(config, tmp_path / "run", progress=False).fit()
    assert results["steps"] == 2
    assert math.isfinite(results["test_bits_per_dim"])
    assert 0 < results["test_bits_per_dim"] < 2 * math.log2(17)


def test_diverged_dynamics_give_nan_not_a_crash():
    """A solver failure (NaN parameters: "underflow in dt") returns NaN, which the trainer skips."""
    model = build_model("ffjord", (2,), 0, TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(math.nan)
    with pytest.warns(RuntimeWarning, match="CNF solve failed"):
        assert torch.isnan(model.log_prob(torch.randn(3, 2))).all()
