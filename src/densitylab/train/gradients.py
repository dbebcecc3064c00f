"""Gradient-norm clipping that touches the gradients only when it clips."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def clip_gradient_norm(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale the gradients so that their joint L2 norm is at most ``max_norm``; return the norm
    before clipping (non-finite if any gradient is).

    The same result as ``torch.nn.utils.clip_grad_norm_``, which multiplies every gradient by
    ``min(1, max_norm / norm)`` even when that factor is 1: one extra pass over all gradients
    each step, a noticeable share of a small model's CPU step. On a CPU, where reading the norm costs no
    device sync, the gradients are rescaled only when the norm exceeds ``max_norm``; on other
    devices this defers to torch's function."""
    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return torch.zeros(())
    if parameters[0].grad.device.type != "cpu":
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad.detach()) for p in parameters]))
    if torch.isfinite(norm) and norm > max_norm:
        scale = max_norm / (float(norm) + 1e-6)
        for p in parameters:
            p.grad.detach().mul_(scale)
    return norm
