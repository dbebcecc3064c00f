"""Toy densities of the course: 2D point clouds and 1D mixtures, generated from a fixed seed.

2D (continuous, shape ``(N, 2)``, roughly within [-4, 4]^2):
``moons`` (two interleaving half circles), ``eight-gaussians`` (a ring of 8 Gaussians),
``checkerboard`` (uniform on 8 of the 16 squares of [-4, 4]^2), ``rings`` (4 concentric rings),
``spirals`` (two interleaved spirals), ``smiley`` (a face: outline, two eyes and a mouth).

1D: ``mixture-1d`` (continuous, a mixture of Gaussians with a wide gap) and ``gaps-1d``
(discrete values in 0..99 drawn from a mixture and rounded, with empty stretches between the
modes: the course's demo of a flow on a histogram with gaps).
"""

from __future__ import annotations

import numpy as np


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x - 0.5, y - 0.25], 1) * 2.0
    return points + rng.normal(scale=0.08, size=points.shape)


def eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angles = rng.integers(0, 8, n) * (np.pi / 4)
    centres = 2.8 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return centres + rng.normal(scale=0.25, size=(n, 2))


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    col, row = rng.integers(0, 4, n), rng.integers(0, 4, n)
    row = row * 2 + (col % 2)  # 8 of the 16 unit-2 squares: a checkerboard
    cells = np.stack([col, row % 4], 1) * 2.0 - 4.0
    return cells + rng.uniform(0, 2, size=(n, 2))


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.integers(1, 5, n) * 0.9
    angle = rng.uniform(0, 2 * np.pi, n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return points + rng.normal(scale=0.08, size=(n, 2))


def spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.uniform(0, 1, n)) * 3 * np.pi
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    points = sign[:, None] * np.stack([t * np.cos(t), t * np.sin(t)], 1) / 2.5
    return points + rng.normal(scale=0.1, size=(n, 2))


def smiley(n: int, rng: np.random.Generator) -> np.ndarray:
    part = rng.choice(4, size=n, p=[0.45, 0.1, 0.1, 0.35])
    angle = rng.uniform(0, 2 * np.pi, n)
    face = 3.0 * np.stack([np.cos(angle), np.sin(angle)], 1)
    left_eye = np.array([-1.1, 1.0]) + rng.normal(scale=0.2, size=(n, 2))
    right_eye = np.array([1.1, 1.0]) + rng.normal(scale=0.2, size=(n, 2))
    mouth_angle = rng.uniform(-np.pi * 0.85, -np.pi * 0.15, n)
    mouth = 1.7 * np.stack([np.cos(mouth_angle), np.sin(mouth_angle)], 1)
    points = np.choose(part[:, None], [face, left_eye, right_eye, mouth])
    return points + rng.normal(scale=0.08, size=(n, 2))


def mixture_1d(n: int, rng: np.random.Generator) -> np.ndarray:
    """Three Gaussians with a wide empty stretch between the first and the others."""
    component = rng.choice(3, size=n, p=[0.3, 0.4, 0.3])
    means, stds = np.array([-2.5, 1.0, 2.5]), np.array([0.5, 0.4, 0.3])
    return (means[component] + stds[component] * rng.normal(size=n))[:, None]


def gaps_1d(n: int, rng: np.random.Generator, levels: int = 100) -> np.ndarray:
    """Integers in ``0..levels-1`` from a mixture, with empty stretches between the modes."""
    component = rng.choice(3, size=n, p=[0.35, 0.4, 0.25])
    means, stds = np.array([0.2, 0.5, 0.8]), np.array([0.03, 0.04, 0.025])
    values = np.rint((means[component] + stds[component] * rng.normal(size=n)) * levels)
    return np.clip(values, 0, levels - 1).astype(np.uint8)[:, None]


TOYS_2D = {"moons": moons, "eight-gaussians": eight_gaussians, "checkerboard": checkerboard,
           "rings": rings, "spirals": spirals, "smiley": smiley}
