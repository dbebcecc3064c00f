"""Checks every flow transform and flow model must pass (used by tests/models/test_flows.py and the
per-model test files): the oracles of docs/design.md, section 6.

Tolerances: in float64, ``inverse(forward(x))`` within 1e-6 absolute (bisection-based inverses
state their own), log-dets within 1e-6 of ``slogdet`` of the autograd Jacobian.
"""

from __future__ import annotations

import io

import torch

from densitylab.models.flows.transforms import Transform


def randomize_(module: torch.nn.Module, std: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter so zero-initialised layers (identity at start) are tested too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


def check_shapes(transform: Transform, x: torch.Tensor, cond=None) -> None:
    z, logabsdet = transform(x, cond)
    assert z.shape == x.shape and logabsdet.shape == (x.shape[0],)
    x_back, logabsdet_inv = transform.inverse(z, cond)
    assert x_back.shape == x.shape and logabsdet_inv.shape == (x.shape[0],)


def check_invertible(transform: Transform, x: torch.Tensor, cond=None, atol: float = 1e-6) -> None:
    """``inverse(forward(x)) == x`` and the two log-dets cancel."""
    z, logabsdet = transform(x, cond)
    x_back, logabsdet_inv = transform.inverse(z, cond)
    assert torch.allclose(x_back, x, atol=atol), (x_back - x).abs().max()
    assert torch.allclose(logabsdet, -logabsdet_inv, atol=atol * 10), (logabsdet + logabsdet_inv).abs().max()


def jacobian_logdet(transform: Transform, x: torch.Tensor, cond=None) -> torch.Tensor:
    """``log|det dz/dx|`` per example from the autograd Jacobian (slogdet), for small inputs."""
    values = []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        ci = None if cond is None else cond[i : i + 1]

        def flat(v, xi=xi, ci=ci):
            return transform(v.view_as(xi), ci)[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xi.reshape(-1))
        values.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(values)


def check_logdet(transform: Transform, x: torch.Tensor, cond=None, atol: float = 1e-6) -> None:
    _, logabsdet = transform(x, cond)
    expected = jacobian_logdet(transform, x, cond)
    assert torch.allclose(logabsdet, expected, atol=atol), (logabsdet - expected).abs().max()


def check_gradients(module: torch.nn.Module, loss: torch.Tensor) -> None:
    """Every parameter receives a finite, non-zero gradient from ``loss``."""
    module.zero_grad()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def check_save_load(module: torch.nn.Module, make, run) -> None:
    """A fresh ``make()`` loaded with ``module``'s state dict gives the same ``run(m)``."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    other = make()
    other.load_state_dict(torch.load(buffer))
    assert torch.allclose(run(module), run(other), atol=1e-10)
