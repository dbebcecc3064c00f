"""The Python entry points beside the command line: load a trained run, train a model you built.

    import densitylab as dl
    model = dl.load("runs/pcnn")            # eval mode; model.run_config, model.dataset, model.levels
    model.log_prob(x); model.sample((4,))

    flow = dl.Flow((2,), 0, dl.transforms.CompositeTransform([...]), prior="gaussian")
    dl.fit(flow, points, steps=500)         # the trainer the CLI uses, on tensors
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig
from densitylab.data.datasets import ImageData
from densitylab.errors import DensitylabError
from densitylab.models.base import DensityModel
from densitylab.train.rundir import CONFIG_FILE


def load(path: str | Path, device: str | torch.device = "cpu") -> DensityModel:
    """The model of a run directory (or of one checkpoint file), in eval mode.

    Besides its weights the model carries ``run_config`` (the run's :class:`RunConfig`, or None
    for a file saved outside a run), ``dataset`` (the name of the data it was trained on, when
    known) and, as every model, ``levels`` and ``shape``."""
    from densitylab.train.checkpoint import model_from_checkpoint

    path = Path(path)
    model, header = model_from_checkpoint(path, device)
    config = None
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        config = RunConfig.load(path / CONFIG_FILE)
    elif isinstance(header.get("run_config"), dict):
        config = RunConfig.from_dict(header["run_config"], source=str(path))
    model.run_config = config
    model.dataset = (header.get("dataset") or {}).get("name") or (config.data if config else None)
    return model.eval()


def fit(
    model: DensityModel,
    train: torch.Tensor,
    test: torch.Tensor | None = None,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    cond: torch.Tensor | None = None,
    test_cond: torch.Tensor | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``model`` on the tensor ``train`` with densitylab's trainer (Adam, warm-up and cosine
    schedule, gradient clipping, divergence recovery, checkpoints) and return its results
    (test score, steps, time).

    ``train``/``test``: integer data in ``{0..model.levels-1}`` or, for ``levels == 0``, floats,
    each ``(N, *model.shape)``; ``test`` defaults to the last tenth of ``train``. ``cond``: a
    continuous context per example ``(N, k)`` for a conditional flow. Give ``steps`` or
    ``epochs``. ``out``: a run directory to keep (default: a temporary one, removed after).
    Other :class:`RunConfig` fields (``eval_every``, ``checkpoint_every``, ``sample_count``, ...)
    go in ``settings``. The model is initialised from the data first (``model.initialize``)."""
    from densitylab.train.trainer import Trainer

    if (steps is None) == (epochs is None):
        raise DensitylabError("give fit() exactly one of steps= or epochs=")
    if test is None:
        cut = max(1, len(train) // 10)
        train, test = train[:-cut], train[-cut:]
        if cond is not None and test_cond is None:
            cond, test_cond = cond[:-cut], cond[-cut:]
    if steps is not None:
        if steps < 1:
            raise DensitylabError(f"steps must be >= 1, got {steps}")
        per_epoch = max(1, len(train) // batch_size)
        epochs = (steps - 0.5) / per_epoch  # the trainer runs ceil(epochs * per_epoch) steps
    data = ImageData("tensor", train.detach().cpu(), test.detach().cpu(), model.levels,
                     train_context=None if cond is None else cond.detach().cpu().float(),
                     test_context=None if test_cond is None else test_cond.detach().cpu().float())
    config = RunConfig(model=getattr(model, "registry_name", "model"), data="tensor",
                       epochs=epochs, batch_size=batch_size, lr=lr,
                       seed=seed, device=str(model.device.type), **{"sample_count": 0, **settings})
    with tempfile.TemporaryDirectory(prefix="densitylab-fit-") as scratch:
        run_dir = Path(out) if out is not None else Path(scratch) / "run"
        trainer = Trainer(config, run_dir, progress=progress, model=model, data=data)
        results = trainer.fit()
    model.eval()
    return results
