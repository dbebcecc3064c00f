"""densitylab's flows against other libraries' flows: the same data, budget, loop and scoring.

Pairs compared (Fashion-MNIST, 8-bit, 28x28):

- ``densitylab-maf`` (5 x MADE 784-512-512-1568, affine) vs ``zuko-maf``
  (``zuko.flows.MAF(784, transforms=5, hidden_features=[512, 512])``) and ``nflows-maf``
  (``MaskedAutoregressiveFlow(784, hidden_features=512, num_layers=5, num_blocks_per_layer=1,
  use_residual_blocks=False)``: the same 784-512-512-1568 MADE; nflows' other defaults kept:
  reverse permutations, softplus scales, no batch norm, no dropout). Both peers hold 7.34M
  parameters; densitylab's MAF stores the same dense network in 4.1M (it drops the masked-out
  upper triangle of each layer).
- ``densitylab-glow`` (L=2, K=8, hidden 64) and ``densitylab-realnvp`` (default) vs
  ``normflows-glow``, built as in normflows' Glow example (``GlowBlock`` x K per level, ``Squeeze``,
  ``Merge``, ``MultiscaleFlow``), L=2, K=8, hidden 64, 1 channel, unconditional (``class_cond=False``
  with a trainable ``DiagGaussian`` per level in place of the example's ``ClassCondDiagGaussian``).

Run (a separate venv, so the peers never become project dependencies; about 6 x (8 + 1) minutes):

    bash benchmarks/peers_env.sh && .peers-venv/bin/python benchmarks/peers.py
    .peers-venv/bin/python benchmarks/peers.py --entries densitylab-maf zuko-maf --minutes 2
    .peers-venv/bin/python benchmarks/peers.py --quick      # 2 steps each: a smoke test

Protocol, the same for every entry (it mirrors densitylab's Trainer, so the densitylab entries
reproduce ``benchmarks/fixed_budget.py``):

- data: ``load_dataset("fashion-mnist")``; batches of ``--batch`` (64) in a seeded random order,
  a new permutation of the 60,000 training images each epoch; ``torch.manual_seed(0)`` before each
  model is built; ``torch.set_num_threads(--threads)`` (2) and
  ``keep_large_allocations_in_heap()`` once for all entries.
- likelihood: ``y = (x + u) / 256`` with ``u ~ U[0, 1)`` (``uniform_dequantize``), RealNVP's
  ``h = logit(alpha + (1 - 2 alpha) y)`` with its log-determinant (``LogitTransform``, alpha =
  densitylab's default margin ``DEFAULT_LOGIT_ALPHA``, 1e-4; ``--alpha`` sets another for every
  entry), and the flow's
  ``log p(h)`` (peers: of ``h`` flattened for the MAFs, of the (1, 28, 28) image for Glow), so
  ``log P(x) >= log p(h) + log|dh/dy| - D log 256``: the dequantization bound densitylab's flows
  report (they do the same steps inside ``log_prob``; checked at start-up, see ``check_protocol``).
- data-dependent init: densitylab's ``initialize_from_data(train[:512])``; for the peers one
  forward pass on the same 512 images (normflows' ActNorm initialises itself on its first pass).
- training: Adam (fused) on the loss in bits/dim; learning rate warmed up linearly over 100 steps
  or 5% of the budget, whichever ends first, then cosine-decayed to 2% of its peak over the rest of
  the budget (the fraction of the budget spent in optimizer steps), as densitylab's Trainer does;
  gradient norm clipped at 100; a step with a non-finite loss or gradient is
  skipped (100 in a row end the entry). Default learning rates: 2e-3 for the MAFs (densitylab's MAF
  default, given to every MAF), 3e-3 for densitylab's Glow and RealNVP (their defaults), 1e-3 for
  normflows' Glow (its example's, with Adamax there). The budget (``--minutes``, 8) counts only the
  wall time of the optimizer steps (batch, forward, backward, update).
- scoring: test bits/dim on the first ``--test-images`` (2,000) test images, in batches of 256,
  with one dequantization sample per image from a generator seeded 0 (the same noise for every
  entry); train images/s = steps x batch / training seconds; the seconds to draw ``--samples``
  (64) samples with seed 0 (a non-finite sample is reported as ``sample_error``).

Output: one JSON line per entry, then a table of densitylab / peer ratios (bits/dim: below 1 is
better for densitylab; images/s: above 1 is faster).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from densitylab.data import ImageData, load_dataset, uniform_dequantize
from densitylab.errors import DensitylabError
from densitylab.models.flows.transforms import DEFAULT_LOGIT_ALPHA, LogitTransform
from densitylab.models.registry import build_model
from densitylab.runtime import keep_large_allocations_in_heap

SHAPE = (1, 28, 28)
LEVELS = 256
DIM = math.prod(SHAPE)
SEED = 0
WARMUP_STEPS = 100
WARMUP_FRACTION = 0.05  # the warm-up never takes more of the budget (densitylab.train.trainer's rule)
MIN_LR_FRACTION = 0.02
GRAD_CLIP = 100.0
MAX_BAD_IN_ROW = 100
EVAL_BATCH = 256
INIT_IMAGES = 512

LogProb = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class SampleError(Exception):
    """A peer's samples came out non-finite."""


@dataclass
class Built:
    """A model ready for the common loop: ``log_prob(x, generator)`` of integer images ``(B, 1,
    28, 28)`` in nats (the dequantization bound), ``sample(n, seed)`` integer images."""

    module: nn.Module
    log_prob: LogProb
    sample: Callable[[int, int], torch.Tensor]
    initialize: Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class Entry:
    library: str
    lr: float
    build: Callable[[LogitTransform], Built]
    description: str


# ----- the shared preprocessing and scoring of the peers ---------------------------------------
def bound_from_density(log_density: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       generator: torch.Generator, logit: LogitTransform) -> torch.Tensor:
    """``log p(h) + log|dh/dy| - D log 256`` for ``h = logit(alpha + (1 - 2 alpha) y)``,
    ``y = (x + u) / 256``: the bound densitylab's flows compute inside ``log_prob``."""
    y = uniform_dequantize(x, LEVELS, generator)
    h, logdet = logit(y)
    log_p = log_density(h)
    if log_p.shape != (x.shape[0],):
        raise RuntimeError(f"a peer's log_prob returned shape {tuple(log_p.shape)}, expected "
                           f"({x.shape[0]},); fix its wrapper in benchmarks/peers.py")
    return log_p + logdet - DIM * math.log(LEVELS)


def images_from_h(h: torch.Tensor, logit: LogitTransform) -> torch.Tensor:
    """Peer samples ``h`` -> integer images; non-finite ``h`` is a :class:`SampleError`."""
    h = h.reshape(-1, *SHAPE)
    bad = ~torch.isfinite(h).flatten(1).all(1)
    if bad.any():
        raise SampleError(f"{int(bad.sum())} of {len(h)} samples came out non-finite")
    y, _ = logit.inverse(h)
    return (y * LEVELS).floor().clamp_(0, LEVELS - 1).long()


def peer(module: nn.Module, log_density: Callable[[torch.Tensor], torch.Tensor],
         draw: Callable[[int], torch.Tensor], logit: LogitTransform) -> Built:
    def log_prob(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return bound_from_density(log_density, x, generator, logit)

    def sample(n: int, seed: int) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # the peers draw from the global generator
            torch.manual_seed(seed)
            return images_from_h(draw(n), logit)

    def initialize(x: torch.Tensor) -> None:  # a first pass (normflows' ActNorm initialises on it)
        module.train()
        with torch.no_grad():
            log_prob(x[:INIT_IMAGES].long(), torch.Generator().manual_seed(SEED))

    return Built(module, log_prob, sample, initialize)


# ----- the entries --------------------------------------------------------------------------------
def densitylab_entry(name: str) -> Callable[[LogitTransform], Built]:
    def build(logit: LogitTransform) -> Built:
        model = build_model(name, SHAPE, LEVELS, {"alpha": logit.alpha})
        return Built(
            model,
            lambda x, generator: model.log_prob(x, generator=generator),
            lambda n, seed: model.sample(n, generator=torch.Generator().manual_seed(seed)),
            lambda x: model.initialize_from_data(x[:INIT_IMAGES]),
        )

    return build


def zuko_maf(logit: LogitTransform) -> Built:
    import zuko

    flow = zuko.flows.MAF(features=DIM, transforms=5, hidden_features=[512, 512])
    return peer(flow, lambda h: flow().log_prob(h.flatten(1)), lambda n: flow().sample((n,)), logit)


def nflows_maf(logit: LogitTransform) -> Built:
    from nflows.flows import MaskedAutoregressiveFlow

    flow = MaskedAutoregressiveFlow(features=DIM, hidden_features=512, num_layers=5,
                                    num_blocks_per_layer=1, use_residual_blocks=False)
    return peer(flow, lambda h: flow.log_prob(h.flatten(1)), lambda n: flow.sample(n), logit)


def normflows_glow(logit: LogitTransform, levels: int = 2, steps: int = 8, hidden: int = 64) -> Built:
    """normflows' Glow example (examples/glow_colab.ipynb) at 1 x 28 x 28, unconditional.
    normflows' flows run latent -> data in ``forward``; ``log_prob`` runs their inverses."""
    import normflows as nf

    channels, height, width = SHAPE
    q0, merges, flows = [], [], []
    for i in range(levels):  # i = 0 is the top (coarsest) level
        flows.append([nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden,
                                         split_mode="channel", scale=True)
                      for _ in range(steps)] + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            factor = 2 ** (levels - i)
            latent = (channels * factor, height // factor, width // factor)
        else:
            latent = (channels * 2 ** (levels + 1), height // 2**levels, width // 2**levels)
        q0.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    return peer(model, lambda h: model.log_prob(h, None), lambda n: model.sample(n)[0], logit)


MAF_DESCRIPTION = "5 transforms, MADE 784-512-512-1568, affine"
GLOW_DESCRIPTION = "L=2, K=8, hidden 64"
ENTRIES: dict[str, Entry] = {
    "densitylab-maf": Entry("densitylab", 2e-3, densitylab_entry("maf"), MAF_DESCRIPTION),
    "zuko-maf": Entry("zuko", 2e-3, zuko_maf, MAF_DESCRIPTION),
    "nflows-maf": Entry("nflows", 2e-3, nflows_maf,
                        MAF_DESCRIPTION + ", num_blocks_per_layer=1, use_residual_blocks=False"),
    "densitylab-glow": Entry("densitylab", 3e-3, densitylab_entry("glow"), GLOW_DESCRIPTION),
    "densitylab-realnvp": Entry("densitylab", 3e-3, densitylab_entry("realnvp"), "default config"),
    "normflows-glow": Entry("normflows", 1e-3, normflows_glow,
                            GLOW_DESCRIPTION + ", unconditional DiagGaussian bases"),
}
PAIRS = [
    ("densitylab-maf", "zuko-maf"),
    ("densitylab-maf", "nflows-maf"),
    ("densitylab-glow", "normflows-glow"),
    ("densitylab-realnvp", "normflows-glow"),
]


# ----- the common loop ----------------------------------------------------------------------------
class BatchOrder:
    """Batches of indices: a seeded permutation of the training images per epoch (as the Trainer)."""

    def __init__(self, count: int, batch: int, seed: int = SEED) -> None:
        self.count, self.batch, self.seed = count, batch, seed
        self.epoch, self.position, self.perm = -1, count, torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        if self.position + self.batch > self.count:
            self.epoch, self.position = self.epoch + 1, 0
            generator = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            self.perm = torch.randperm(self.count, generator=generator)
        index = self.perm[self.position : self.position + self.batch]
        self.position += self.batch
        return index


def learning_rate(peak: float, step: int, progress: float) -> float:
    warmup = min(1.0, max((step + 1) / WARMUP_STEPS, progress / WARMUP_FRACTION))
    after = max(0.0, progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)
    decay = 0.5 * (1 + math.cos(math.pi * min(after, 1.0)))
    return peak * warmup * max(decay, MIN_LR_FRACTION)


def train(built: Built, images: torch.Tensor, lr: float, budget_s: float, batch: int,
          max_steps: int | None) -> dict[str, float | int | str]:
    """Optimizer steps until ``budget_s`` seconds of them (or ``max_steps`` tries) are spent."""
    params = [p for p in built.module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)
    noise = torch.Generator().manual_seed(SEED + 1)
    order = BatchOrder(len(images), batch)
    steps = skipped = bad_in_row = 0
    seconds = 0.0
    stopped = ""
    built.module.train()
    while True:
        progress = seconds / budget_s
        if max_steps is not None:
            progress = max(progress, (steps + skipped) / max_steps)
        if progress >= 1.0:
            break
        started = time.perf_counter()
        x = images[order.next()].long()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(lr, steps, progress)
        loss = -built.log_prob(x, noise).mean() / (DIM * math.log(2))
        optimizer.zero_grad(set_to_none=True)
        ok = bool(torch.isfinite(loss))
        if ok:
            loss.backward()
            ok = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)))
            if ok:
                optimizer.step()
            else:
                optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
        if ok:
            steps, bad_in_row = steps + 1, 0
        else:
            skipped, bad_in_row = skipped + 1, bad_in_row + 1
            if bad_in_row >= MAX_BAD_IN_ROW:
                stopped = f"stopped after {bad_in_row} non-finite steps in a row"
                break
    result: dict[str, float | int | str] = {
        "steps": steps, "skipped_steps": skipped, "train_seconds": seconds,
        "train_images_per_s": steps * batch / seconds if seconds else 0.0}
    if stopped:
        result["train_error"] = stopped
    return result


@torch.no_grad()
def test_bits_per_dim(built: Built, images: torch.Tensor) -> float:
    """Mean bits/dim, one dequantization sample per image from a generator seeded ``SEED``."""
    built.module.eval()
    generator = torch.Generator().manual_seed(SEED)
    total = 0.0
    for start in range(0, len(images), EVAL_BATCH):
        total += float(built.log_prob(images[start : start + EVAL_BATCH].long(), generator)
                       .double().sum())
    return -total / (len(images) * DIM * math.log(2))


@torch.no_grad()
def time_samples(built: Built, n: int) -> tuple[float, str | None]:
    built.module.eval()
    started = time.perf_counter()
    error = None
    try:
        built.sample(n, SEED)
    except (DensitylabError, SampleError, RuntimeError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return time.perf_counter() - started, error


def check_protocol(train_images: torch.Tensor, logit: LogitTransform) -> float:
    """densitylab's MAF starts as the identity, so its ``log_prob`` must equal the peers' formula
    with a standard normal ``log p(h)``: the two scorings are the same bound. Returns the largest
    difference in nats."""
    torch.manual_seed(SEED)
    model = build_model("maf", SHAPE, LEVELS, {"alpha": logit.alpha}).eval()
    x = train_images[:8].long()
    with torch.no_grad():
        ours = model.log_prob(x, generator=torch.Generator().manual_seed(7))
        normal = torch.distributions.Normal(0.0, 1.0)
        theirs = bound_from_density(lambda h: normal.log_prob(h).flatten(1).sum(1), x,
                                    torch.Generator().manual_seed(7), logit)
    gap = float((ours - theirs).abs().max())
    if gap > 1e-2:
        raise SystemExit(f"peers.py: densitylab's log_prob and the peers' scoring differ by {gap:.3g} "
                         "nats; fix bound_from_density before comparing")
    return gap


def library_version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def run_entry(name: str, data: ImageData, args: argparse.Namespace) -> dict:
    entry = ENTRIES[name]
    lr = args.lr if args.lr is not None else entry.lr
    torch.manual_seed(SEED)
    try:
        built = entry.build(LogitTransform(args.alpha))
    except ImportError as exc:
        raise SystemExit(f"peers.py: {entry.library} is missing ({exc}); run "
                         "'bash benchmarks/peers_env.sh' and use .peers-venv/bin/python") from None
    built.initialize(data.train)
    result: dict = {"entry": name, "library": entry.library,
                    "version": library_version(entry.library), "config": entry.description,
                    "parameters": sum(p.numel() for p in built.module.parameters())}
    result |= train(built, data.train, lr, args.minutes * 60, args.batch, 2 if args.quick else None)
    test = data.test[: args.test_images]
    result["test_images"] = len(test)
    result["test_bits_per_dim"] = test_bits_per_dim(built, test)
    seconds, error = time_samples(built, args.samples)
    result[f"sample_{args.samples}_seconds"] = seconds
    if error:
        result["sample_error"] = error
    result |= {"lr": lr, "alpha": args.alpha, "minutes": args.minutes, "batch": args.batch,
               "threads": args.threads}
    if args.quick:
        result["quick"] = True  # 2 steps: the numbers mean nothing
    return result


def ratio_table(results: dict[str, dict]) -> list[str]:
    lines = [f"{'densitylab / peer':<40} {'bits/dim':>17} {'ratio':>7} {'images/s':>15} {'ratio':>7}"]
    for ours, theirs in PAIRS:
        if ours in results and theirs in results:
            a, b = results[ours], results[theirs]
            bpd, speed = (a["test_bits_per_dim"], b["test_bits_per_dim"]), \
                (a["train_images_per_s"], b["train_images_per_s"])
            lines.append(f"{ours + ' / ' + theirs:<40} {bpd[0]:>8.4f}/{bpd[1]:<8.4f} "
                         f"{bpd[0] / bpd[1]:>7.3f} {speed[0]:>7.1f}/{speed[1]:<7.1f} "
                         f"{speed[0] / speed[1] if speed[1] else math.inf:>7.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", nargs="+", default=list(ENTRIES), choices=list(ENTRIES))
    parser.add_argument("--minutes", type=float, default=8.0, help="training budget per entry")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=None, help="samples to time (default 64)")
    parser.add_argument("--lr", type=float, default=None, help="override every entry's learning rate")
    parser.add_argument("--alpha", type=float, default=DEFAULT_LOGIT_ALPHA,
                        help="the logit margin of every entry (default: densitylab's)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 2 steps per entry, 64 test images, 4 samples")
    args = parser.parse_args()
    if args.quick:
        args.test_images = min(args.test_images, 64)
    if args.samples is None:
        args.samples = 4 if args.quick else 64
    if min(args.minutes, args.threads, args.batch, args.test_images, args.samples) <= 0:
        parser.error("--minutes, --threads, --batch, --test-images and --samples must be positive")

    # normflows' LU 1x1 convolution calls the deprecated torch.lu at every pass
    warnings.filterwarnings("ignore", message="torch.lu is deprecated")
    keep_large_allocations_in_heap()
    torch.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist")
    if data.shape != SHAPE or data.levels != LEVELS:
        raise SystemExit(f"peers.py: expected 8-bit 1x28x28 Fashion-MNIST, got {data.shape} with "
                         f"{data.levels} levels; check the dataset files")
    gap = check_protocol(data.train, LogitTransform(args.alpha))
    print(f"peers.py: scoring check passed (densitylab maf vs the peers' formula: {gap:.2e} nats)",
          file=sys.stderr)
    results: dict[str, dict] = {}
    for name in args.entries:
        print(f"peers.py: {name} ...", file=sys.stderr, flush=True)
        results[name] = run_entry(name, data, args)
        print(json.dumps(results[name]), flush=True)
    for line in ratio_table(results):
        print(line)


if __name__ == "__main__":
    main()
