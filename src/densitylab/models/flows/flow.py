"""The flow model: a composition ``dequantizer -> preprocess -> transform -> prior``.

A :class:`Flow` gives a density ``p_Y`` on continuous values ``y`` through the change of variables

    log p_Y(y) = log p_prior(z) + log|det dz/dh| + log|det dh/dy|,   h = preprocess(y), z = transform(h)

``preprocess`` is a fixed bijection (RealNVP's logit map for dequantized data in ``[0, 1)``, Glow's
centring, a squeeze, or nothing); ``transform`` holds the learned layers; ``prior`` is a fixed
base distribution (``priors.py``). Continuous data also passes through a :class:`Standardize`
first (identity unless fitted to a training set, e.g. a user's table).

For integer data ``x in {0..K-1}^D`` a dequantizer (``dequantization.py``) draws ``y = (x + u) / K``
in ``[0, 1)^D`` with density ``q(u | x)`` (uniform by default), and (Theis et al. 2016; Ho et al.
2019):

    log P(x) = log E_{u ~ q}[ p_Y((x + u) / K) K^{-D} / q(u | x) ]
             >= E_{u ~ q}[ log p_Y((x + u) / K) - D log K - log q(u | x) ]

:meth:`Flow.log_prob` returns the one-sample estimate of this bound, :meth:`Flow.log_prob_iw` the
importance-weighted estimate with ``S`` samples (tighter as ``S`` grows). A flow whose density is
uniform on ``[0, 1)^D`` scores exactly ``log2 K`` bits/dim. For continuous data (``levels == 0``)
``log_prob`` is ``log p_Y(x)`` itself, in nats.

The model follows the transform protocol on ``y``: ``flow(y, cond) -> (z, log|det dz/dy|)`` and
``flow.inverse(z, cond) -> (y, log|det dy/dz|)``. :meth:`Flow.rsample` draws ``y = flow^-1(z)``,
``z ~ prior``, with gradients reaching the parameters; :meth:`Flow.sample` draws data like the
training data (integers for discrete data). ``context_features > 0`` makes the flow conditional on
a continuous context ``cond`` of shape ``(B, context_features)``, passed to every transform.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel, sample_count
from densitylab.models.flows.dequantization import make_dequantizer
from densitylab.models.flows.priors import Prior, make_prior
from densitylab.models.flows.transforms import Standardize, Transform


class Flow(DensityModel):
    """``dequantizer -> [standardize] -> preprocess -> transform -> prior``; see the module docstring.

    ``flatten``: the transform sees ``(B, D)`` vectors (``False``: the data's own shape).
    ``latent_shape``: the shape of one ``z`` (default: what the transform is given).
    """

    family = "flow"
    init_examples: int = 512  # how many examples the data-dependent initialisation looks at

    def __init__(
        self,
        shape: tuple[int, ...],
        levels: int,
        transform: Transform,
        prior: str | Prior = "gaussian",
        preprocess: Transform | None = None,
        dequantization: str = "uniform",
        flatten: bool = True,
        latent_shape: tuple[int, ...] | None = None,
        context_features: int = 0,
    ) -> None:
        super().__init__(shape, levels)
        if context_features < 0:
            raise ValueError(f"context_features must be >= 0, got {context_features}")
        self.flatten = flatten
        self.context_features = int(context_features)
        self.standardize = Standardize(self.dim) if self.continuous else None
        self.preprocess = preprocess
        self.transform = transform
        self.prior = make_prior(prior)
        self._latent_shape = tuple(latent_shape) if latent_shape else (
            (self.dim,) if flatten else self.shape)
        self.dequantizer: nn.Module | None = None
        self.set_dequantization(dequantization)

    # ----- parts -------------------------------------------------------------------------------
    def set_dequantization(self, kind: str, hidden: int = 32) -> None:
        """``uniform`` (default) or ``variational`` (a flow q(u|x) trained with the model)."""
        if self.continuous:
            if kind != "uniform":
                raise ValueError("dequantization applies to discrete data only; this data is continuous")
            self.dequantizer = None
            return
        dequantizer = make_dequantizer(kind, self.shape, self.levels, hidden)
        existing = next(iter(self.parameters()), None)
        if existing is not None:
            dequantizer = dequantizer.to(existing.device, existing.dtype)
        self.dequantizer = dequantizer

    @property
    def conditional(self) -> bool:
        return self.context_features > 0

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def latent_shape(self) -> tuple[int, ...]:
        return self._latent_shape

    def check_context(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """``cond`` as a ``(batch, context_features)`` float tensor (one row is broadcast)."""
        if not self.conditional:
            self.refuse_cond(cond)
            return None
        if cond is None:
            raise DensitylabError(f"this flow is conditional: give a context of {self.context_features} "
                                  "value(s) per example (cond)")
        cond = torch.as_tensor(cond, device=self.device).to(self.dtype)
        if cond.dim() < 2:  # one context for the batch, or one value per example when k = 1
            cond = cond.reshape(-1, 1) if self.context_features == 1 else cond.reshape(1, -1)
        if cond.shape[0] == 1 and batch != 1:
            cond = cond.expand(batch, -1)
        if tuple(cond.shape) != (batch, self.context_features):
            raise DensitylabError(f"expected a context of shape ({batch}, {self.context_features}), "
                                  f"got {tuple(cond.shape)}")
        return cond

    # ----- the bijection on y ------------------------------------------------------------------
    def _parts(self) -> list[Transform]:
        """The fixed maps before the learned transform, in the data -> noise order."""
        return [part for part in (self.standardize, self.preprocess) if part is not None]

    def forward(self, y: torch.Tensor, cond: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Continuous data ``y`` -> latent ``z`` and ``log|det dz/dy|``."""
        h = y.flatten(1) if self.flatten else y
        logabsdet = h.new_zeros(h.shape[0])
        for part in self._parts():
            h, ld = part(h)
            logabsdet = logabsdet + ld
        z, ld = self.transform(h, cond)
        return z, logabsdet + ld

    def inverse(self, z: torch.Tensor, cond: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``z`` -> continuous data ``y`` (in the data's shape) and ``log|det dy/dz|``."""
        h, logabsdet = self.transform.inverse(z, cond)
        for part in reversed(self._parts()):
            h, ld = part.inverse(h)
            logabsdet = logabsdet + ld
        return h.reshape(-1, *self.shape), logabsdet

    def invert(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`inverse` without the log-determinant (what sampling needs; cheaper for CNFs)."""
        h = self.transform.invert(z, cond)
        for part in reversed(self._parts()):
            h = part.invert(h)
        return h.reshape(-1, *self.shape)

    # ----- densities ---------------------------------------------------------------------------
    def log_density(self, y: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``log p_Y(y)`` of continuous values ``y`` (in ``[0, 1)^D`` for discrete data)."""
        z, logabsdet = self(y, cond)
        return self.prior.log_prob(z) + logabsdet

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Dequantized ``y`` only (``log q`` dropped): for plots and preprocessing checks."""
        return self.dequantizer(x, generator, self.dtype)[0]

    def log_prob(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The dequantization bound in nats (the density for continuous data). ``generator`` feeds
        the dequantization noise and any noise of the transforms (FFJORD's trace estimator)."""
        self.check_input(x)
        cond = self.check_context(cond, len(x))
        with self._noise(generator):
            if self.continuous:
                return self.log_density(x.to(self.dtype), cond)
            y, log_q = self.dequantizer(x, generator, self.dtype)
            return self.log_density(y, cond) - self.dim * math.log(self.levels) - log_q

    def log_prob_iw(
        self,
        x: torch.Tensor,
        n_samples: int,
        cond: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Importance-weighted estimate with ``n_samples`` dequantization samples per example."""
        samples = torch.stack([self.log_prob(x, cond, generator) for _ in range(n_samples)])
        return torch.logsumexp(samples, dim=0) - math.log(n_samples)

    @contextmanager
    def _noise(self, generator: torch.Generator | None) -> Iterator[None]:
        """Hands ``generator`` to the transforms that draw noise of their own (``uses_noise``)."""
        noisy = [m for m in self.modules() if getattr(m, "uses_noise", False)]
        for module in noisy:
            module.generator = generator
        try:
            yield
        finally:
            for module in noisy:
                module.generator = None

    # ----- sampling ----------------------------------------------------------------------------
    def rsample(
        self,
        sample_shape: int | tuple[int, ...] = (),
        cond: torch.Tensor | None = None,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Reparameterised samples of the continuous ``y``, shape ``(*sample_shape, *shape)``:
        ``y = flow^-1(z)``, ``z ~ prior`` (at ``temperature``), differentiable in the parameters."""
        n, leading = sample_count(sample_shape)
        cond = self.check_context(cond, n)
        z = self.prior.sample((n, *self.latent_shape()), generator, temperature, self.device, self.dtype)
        return self.invert(z, cond).reshape(*leading, *self.shape)

    @torch.no_grad()
    def sample(self, sample_shape=(), cond=None, temperature=1.0, generator=None):
        """Samples like the training data, shape ``(*sample_shape, *shape)``. Where the inverse
        overflows in float32 (a trained flow can map a prior draw far out), the same noise is run
        through a float64 copy of the model, which gives the exact sample; a value that is still
        non-finite is an error, never a silently wrong image."""
        n, leading = sample_count(sample_shape)
        if generator is None:  # a generator of our own, so the noise can be replayed
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        state = generator.get_state()
        y = self.rsample(n, cond, temperature, generator)
        bad = ~torch.isfinite(y).flatten(1).all(1)
        if bad.any() and self.dtype != torch.float64:
            generator.set_state(state)
            wide = copy.deepcopy(self).double()
            wide_cond = cond.double() if cond is not None and torch.is_tensor(cond) \
                and cond.is_floating_point() else cond
            y64 = wide.rsample(n, wide_cond, temperature, generator)
            rows = bad.view(-1, *([1] * (y.dim() - 1)))
            y = torch.where(rows, y64.to(y.dtype), y)
            bad = ~torch.isfinite(y).flatten(1).all(1)
        if bad.any():
            raise DensitylabError(
                f"{int(bad.sum())} of {n} samples came out non-finite (the flow's inverse "
                "overflowed, even in float64); sample with a lower --temperature or train the "
                "model longer"
            )
        if not self.continuous:
            y = (y * self.levels).floor().clamp_(0, self.levels - 1).long()
        return y.reshape(*leading, *self.shape)

    # ----- data-dependent initialisation -------------------------------------------------------
    @torch.no_grad()
    def initialize_from_data(self, x: torch.Tensor) -> None:
        """One forward pass on (up to :attr:`init_examples` of) ``x`` in which every transform with a
        data-dependent initialisation (``initialize(h)``: ActNorm, mixture CDFs) is first
        initialised from the input it receives. The dequantization noise comes from a fixed-seed
        generator, so every process of a distributed run initialises identically."""
        pending = [m for m in self.modules()
                   if isinstance(m, Transform) and callable(getattr(m, "initialize", None))]
        if not pending:
            return
        handles = [m.register_forward_pre_hook(_initialize_once) for m in pending]
        try:
            x = x[: self.init_examples].to(self.device)
            cond = None
            if self.conditional:  # a context-free init pass: zeros stand in for the context
                cond = torch.zeros(len(x), self.context_features, device=self.device, dtype=self.dtype)
            self.log_prob(x, cond, generator=torch.Generator().manual_seed(0))
        finally:
            for handle in handles:
                handle.remove()

    def step_metrics(self) -> dict[str, float]:
        """Per-step numbers of the transforms (FFJORD's function evaluations): counts summed,
        other values averaged over the transforms that report them."""
        values: dict[str, list[float]] = {}
        for part in self._parts_offering("step_metrics"):
            for key, value in part.step_metrics().items():
                values.setdefault(key, []).append(value)
        return {k: sum(v) if k.startswith("nfe") else sum(v) / len(v) for k, v in values.items()}

    def training_penalty(self) -> torch.Tensor | None:
        """The transforms' training penalties (RNODE's, of FFJORD's CNFs), summed per example and
        divided by the dimension: nats/dim, as the loss; ``None`` when none has one."""
        penalties = [p for part in self._parts_offering("training_penalty")
                     if (p := part.training_penalty()) is not None]
        return sum(penalties[1:], penalties[0]) / self.dim if penalties else None

    def _parts_offering(self, method: str) -> list[nn.Module]:
        """The modules inside the transform (not the transform itself) that have ``method``."""
        return [m for m in self.transform.modules()
                if m is not self.transform and callable(getattr(m, method, None))]


def _initialize_once(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: initialise ``module`` from its input, then remove the hook's effect."""
    if not getattr(module, "is_initialized", False):
        module.initialize(args[0])
