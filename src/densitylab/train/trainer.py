"""The training loop shared by every model: one run directory, resumable after any kill.

A run directory (:mod:`densitylab.train.rundir`: its file names and its lock) holds
``config.yaml``, ``metrics.jsonl`` (one JSON record per log/eval), ``checkpoint.safetensors``
(latest, written atomically), and at the end ``model.safetensors``, ``results.json`` and
``samples.png`` (plus TensorBoard events under ``tb/`` when tensorboard is installed). The
process training it holds the directory's lock until :meth:`Trainer.fit` returns (or it exits).

Determinism: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)``, and all
training noise (dequantization) comes from one generator whose state is checkpointed, so a run
resumed from a checkpoint replays exactly the steps an uninterrupted run would take (on CPU).

Under ``torchrun`` the same code runs in every process (:mod:`densitylab.train.distributed`):
each rank trains on its slice of the global batch through DistributedDataParallel, and only rank 0
writes files. ``precision`` and ``compile`` (:mod:`densitylab.train.precision`) change how the
training loss is computed, never what it is.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densitylab.config import RunConfig, parse_duration
from densitylab.data import ImageData, load_dataset
from densitylab.errors import DensitylabError
from densitylab.evaluate import bits_per_dim
from densitylab.models.base import DensityModel
from densitylab.models.registry import build_model
from densitylab.runtime import keep_large_allocations_in_heap
from densitylab.train import checkpoint as ckpt
from densitylab.train import distributed, rundir
from densitylab.train.files import NoSpaceError, atomic_write_json, atomic_write_text, no_space
from densitylab.train.gradients import clip_gradient_norm
from densitylab.train.precision import TrainingLoss, autocast_dtype
from densitylab.train.progress import Progress
from densitylab.train.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FINAL_FILES,
    METRICS_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    RUN_FILES,
    SAMPLES_FILE,
    TENSORBOARD_DIR,
)
from densitylab.train.validation import check_resumable
from densitylab.train.weight_average import WeightAverage
from densitylab.viz.grid import save_grid

WARMUP_FRACTION = 0.05  # the warm-up never takes more than this share of a run
LOG_SECONDS = 10.0  # off a terminal: one progress line per log_every steps, at most this often
NOISE_SEED_STRIDE = 1_000_003  # rank r's noise generator: seed + 1 + r * stride


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DensitylabError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint header."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    lr_scale: float = 1.0
    train_seconds: float = 0.0
    skipped_steps: int = 0
    restores: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Trainer:
    """Trains ``config.model`` on ``config.data`` into ``run_dir``."""

    def __init__(self, config: RunConfig, run_dir: str | Path, resume: bool = False,
                 force: bool = False, progress: bool = True, model: DensityModel | None = None,
                 data: ImageData | None = None) -> None:
        """``model`` and ``data``, when given, replace the ones ``config`` names (the Python API's
        :func:`densitylab.fit` trains a model the user built, on tensors)."""
        self.config = config.validate()
        self.run_dir = Path(run_dir)
        self.progress = progress
        keep_large_allocations_in_heap()
        self._lock: rundir.RunLock | None = None
        self.last_checkpoint_step: int | None = None
        # refuse early, but touch nothing yet (the lock is rank 0's, so only rank 0 looks at it)
        afresh = self._check_run_dir(resume, force, probe_lock=os.environ.get("RANK", "0") == "0")
        if config.threads:
            torch.set_num_threads(config.threads)
        self.device = distributed.init_from_env(resolve_device(config.device))  # cuda:LOCAL_RANK
        self.autocast = autocast_dtype(config.precision, self.device)
        distributed.check_batch_size(config.batch_size)
        if data is None:
            with distributed.main_first():  # a download happens once
                data = load_dataset(config.data, config.n_bits, config.data_dir, config.context_columns)
        self.data: ImageData = data
        self.n_classes = self._class_count() if config.conditional else 0
        if self.n_classes:
            config.model_config = dict(config.model_config) | {"n_classes": self.n_classes}
        if self.data.context_features and model is None:
            config.model_config = dict(config.model_config) | {
                "context_features": self._context_features()}
        torch.manual_seed(config.seed)
        self.model: DensityModel = (model if model is not None else build_model(
            config.model, self.data.shape, self.data.levels, config.model_config)).to(self.device)
        if config.channels_last:  # 4-d weights in NHWC; batches follow in next_batch
            self.model.to(memory_format=torch.channels_last)
        if config.lr is None:
            config.lr = self.model.default_lr
        self.average = WeightAverage(self.model, config.ema) if config.ema else None
        # fused: one kernel over all parameters (about half the optimizer time on a CPU)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)
        # the loss as a module: DDP synchronizes its gradients, torch.compile compiles it
        self.loss_fn = distributed.data_parallel(
            TrainingLoss(self.model, self.autocast, self.device.type), self.device)
        if config.compile:
            self.loss_fn = torch.compile(self.loss_fn)
        self.scaler = torch.amp.GradScaler(self.device.type) if config.precision == "fp16" else None
        self.noise = torch.Generator().manual_seed(
            config.seed + 1 + NOISE_SEED_STRIDE * distributed.rank())
        self.state = TrainState()
        self.train_images = self.data.train.to(self.device)
        self.train_labels = self._train_cond()
        self.steps_per_epoch = len(self.train_images) // config.batch_size
        if self.steps_per_epoch == 0:
            raise DensitylabError(
                f"--batch-size {config.batch_size} exceeds the {len(self.train_images)} training "
                "images; lower it"
            )
        self.total_steps = (
            math.ceil(config.epochs * self.steps_per_epoch) if config.epochs is not None else None
        )
        self.budget_seconds = parse_duration(config.time_budget) if config.time_budget else None
        self._perm: tuple[int, torch.Tensor] | None = None
        # Everything the user could have got wrong has been checked (by every rank: hence the
        # barrier): now the directory changes, by rank 0 only.
        distributed.barrier()
        main = distributed.is_main()
        if main:  # one writer: the checks are made again under the lock
            self._lock = rundir.RunLock(self.run_dir)
        try:
            if main and self._check_run_dir(resume, force, probe_lock=False) != afresh:
                raise DensitylabError(f"{self.run_dir} changed while this run started; run it again")
            if afresh and main:
                print(f"densitylab: {self.run_dir} was stopped before its first checkpoint; starting "
                      f"it afresh from its {CONFIG_FILE}", file=sys.stderr)
            self._open_run_dir(resume and not afresh, force or afresh)
        except BaseException:
            self.close()
            raise
        resume = resume and not afresh
        self._needs_data_init = not resume  # a checkpoint holds initialised parameters
        self.writer = self._tensorboard() if main else None
        if resume:
            self._log({"step": self.state.step, "event": "resume"})

    def _check_budget_left(self) -> None:
        """A resumed run whose budget is spent says so: it only evaluates and samples again (which
        also rewrites a damaged model.safetensors from the checkpoint)."""
        if not self.done() or not distributed.is_main():
            return
        print(f"densitylab: the budget of {self.run_dir} is already spent (step {self.state.step}, "
              f"{self.state.train_seconds:.1f} s of training): nothing to train, only evaluating and "
              "sampling again; to train on, give a larger --time-budget or --epochs",
              file=sys.stderr, flush=True)

    def _record_budget_change(self) -> None:
        """Save the (possibly extended) budget in config.yaml, saying what changed."""
        path = self.run_dir / CONFIG_FILE
        saved = RunConfig.load(path) if path.is_file() else None
        for key, flag in (("epochs", "--epochs"), ("time_budget", "--time-budget")):
            before, after = getattr(saved, key, None), getattr(self.config, key)
            if saved is not None and before != after:
                print(f"densitylab: {flag} changes from {before if before is not None else 'none'} "
                      f"to {after if after is not None else 'none'}; saved in {path}",
                      file=sys.stderr, flush=True)
        self.config.save(path)

    def _class_count(self) -> int:
        """Number of classes of a labelled dataset (``--conditional``), checked against the model."""
        from densitylab.models.registry import available_models

        data, name = self.data, self.config.model
        if data.train_labels is None or data.test_labels is None:
            raise DensitylabError(f"--conditional needs labels, and {data.name} has none; "
                                  "choose a labelled dataset (mnist5k, fashion-mnist, digits, ...)")
        info = available_models().get(name)
        if info is not None and "n_classes" not in info.Config.__dataclass_fields__:
            conditional = sorted(n for n, i in available_models().items()
                                 if "n_classes" in i.Config.__dataclass_fields__)
            raise DensitylabError(f"model {name!r} has no class-conditional version; use one of "
                                  f"{', '.join(conditional)}")
        return int(max(data.train_labels.max(), data.test_labels.max())) + 1

    def _context_features(self) -> int:
        """The width of the data's context, checked against the model's options."""
        from densitylab.models.registry import available_models

        name = self.config.model
        info = available_models().get(name)
        if info is not None and "context_features" not in info.Config.__dataclass_fields__:
            takers = sorted(n for n, i in available_models().items()
                            if "context_features" in i.Config.__dataclass_fields__)
            raise DensitylabError(f"model {name!r} takes no context; use one of {', '.join(takers)} "
                                  "for data with context columns")
        return self.data.context_features

    def _train_cond(self) -> torch.Tensor | None:
        """What conditions the model in training: class labels or a continuous context."""
        if self.n_classes:
            return self.data.train_labels.to(self.device)
        if self.data.train_context is not None:
            return self.data.train_context.to(self.device)
        return None

    def _test_cond(self, count: int) -> torch.Tensor | None:
        if self.n_classes:
            return self.data.test_labels[:count]
        if self.data.test_context is not None:
            return self.data.test_context[:count]
        return None

    # ----- run directory -------------------------------------------------------------------
    def _check_run_dir(self, resume: bool, force: bool, probe_lock: bool = True) -> bool:
        """Refuse what must not start; True when a resumed run starts afresh (it was stopped
        before its first checkpoint)."""
        if resume:
            return rundir.resume_starts_afresh(self.run_dir, probe_lock)
        rundir.check_new_run(self.run_dir, force, probe_lock)
        return False

    def _open_run_dir(self, resume: bool, force: bool) -> None:
        """Restore the checkpoint (resume) or start the directory (rank 0 writes)."""
        main = distributed.is_main()
        if resume:
            self._restore(self.run_dir / CHECKPOINT_FILE, truncate_metrics=True)
            self._check_budget_left()
            if main:
                self._clear(FINAL_FILES)  # rewritten by finish(); stale ones would mislead
                self._record_budget_change()  # a budget change is now on record, and said
        elif main:
            self._clear(RUN_FILES if force else ())
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / CONFIG_FILE)

    def _clear(self, names: tuple[str, ...]) -> None:
        """Remove run files (and temporary files a kill may have left)."""
        rundir.clear(self.run_dir, names)

    def close(self) -> None:
        """Release the run directory's lock (and close TensorBoard's writer)."""
        if getattr(self, "writer", None) is not None:
            self.writer.close()
            self.writer = None
        if self._lock is not None:
            self._lock.release()

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None
        return SummaryWriter(str(self.run_dir / TENSORBOARD_DIR), purge_step=self.state.step or None)

    def _log(self, record: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        with open(self.run_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, record["step"])

    def _truncate_metrics(self) -> None:
        """Keep only complete records up to the checkpoint's step (a kill may leave more)."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= self.state.step:
                kept.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    # ----- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Called by every rank (each one's noise state is kept); rank 0 writes the file."""
        noise = distributed.all_gather_objects(self.noise.get_state())
        if not distributed.is_main():
            return
        extra_tensors = {"rng.noise": noise[0], "rng.torch": torch.get_rng_state()}
        extra_tensors |= {f"rng.noise.rank{rank}": state for rank, state in enumerate(noise) if rank}
        if self.average is not None:
            extra_tensors |= self.average.state_tensors()
        header = {"state": self.state.to_dict(), "run_config": self.config.to_dict(),
                  **self._dataset_header()}
        if self.scaler is not None:
            header["grad_scaler"] = self.scaler.state_dict()
        try:
            ckpt.save_checkpoint(self.run_dir / CHECKPOINT_FILE, self.model, self.optimizer,
                                 extra_tensors=extra_tensors, extra_header=header)
        except NoSpaceError as exc:
            raise self._out_of_space(exc) from exc
        self.last_checkpoint_step = self.state.step

    def _out_of_space(self, exc: OSError | NoSpaceError) -> DensitylabError:
        """One line: what ran out writing which file, the last good checkpoint, how to go on."""
        if isinstance(exc, NoSpaceError):
            where, (reason, advice) = exc.path, (exc.reason, exc.advice)
        else:
            where, (reason, advice) = exc.filename or self.run_dir, no_space(exc) or ("", "")
        last = (f"the last good checkpoint is step {self.last_checkpoint_step}"
                if self.last_checkpoint_step is not None else "no checkpoint was written yet")
        return DensitylabError(f"{reason} writing {where}; {last}; {advice}, then run "
                               f"'densitylab train --resume {self.run_dir}'")

    def _dataset_header(self) -> dict[str, Any]:
        return ckpt.dataset_header(self.config.data, self.data.shape, self.data.levels)

    def save_model(self, path: Path | None = None) -> None:
        """The model's weights alone (``model.safetensors`` unless ``path``), for eval and sample."""
        ckpt.save_checkpoint(path or self.run_dir / MODEL_FILE, self.model,
                             extra_header=self._dataset_header())

    def _restore(self, path: Path, truncate_metrics: bool = False) -> None:
        tensors, header = ckpt.read_checkpoint(path)
        if header.get("model") != self.config.model:
            raise DensitylabError(f"{path} holds a {header.get('model')} model, not {self.config.model}")
        weights = MODEL_FILE if (self.run_dir / MODEL_FILE).is_file() else path.name
        check_resumable(tensors, header, path, f"'densitylab eval' and 'densitylab sample' still work "
                        f"from {weights}; retrain with --force to train further")
        ckpt.load_model_state(self.model, tensors, path)
        if self.average is not None:  # a run saved without an average starts one from its weights
            self.average = WeightAverage(self.model, self.config.ema)
            self.average.load_state_tensors(tensors, path)
        ckpt.load_optimizer_state(self.optimizer, tensors, header, path,
                                  [f"model.{name}" for name, _ in self.model.named_parameters()])
        rank = distributed.rank()
        noise_key = f"rng.noise.rank{rank}" if rank else "rng.noise"
        if noise_key in tensors:  # (a rank the saved run did not have keeps its own fresh stream)
            self.noise.set_state(tensors[noise_key])
        torch.set_rng_state(tensors["rng.torch"])
        if self.scaler is not None and "grad_scaler" in header:
            self.scaler.load_state_dict(header["grad_scaler"])
        self.state.__dict__.update(TrainState(**header["state"]).__dict__)  # in place: no stale aliases
        self.last_checkpoint_step = self.state.step
        if truncate_metrics and distributed.is_main():
            self._truncate_metrics()

    # ----- the loop ------------------------------------------------------------------------
    def learning_rate(self) -> float:
        """Linear warm-up to ``lr``, then (``schedule: cosine``) a cosine decay to 2% of it.

        The warm-up lasts ``warmup_steps`` steps but never more than :data:`WARMUP_FRACTION` of the
        run (of its steps, or of its time budget), so that a short run reaches its peak rate; the
        decay runs over the rest of the run."""
        cfg, state = self.config, self.state
        progress = self.progress_fraction()
        warmup = min(1.0, max((state.step + 1) / max(cfg.warmup_steps, 1), progress / WARMUP_FRACTION))
        decay = 1.0
        if cfg.schedule == "cosine":
            after = max(0.0, progress - WARMUP_FRACTION) / (1 - WARMUP_FRACTION)
            decay = 0.5 * (1 + math.cos(math.pi * min(after, 1.0)))
        return cfg.lr * state.lr_scale * warmup * max(decay, 0.02)

    def progress_fraction(self) -> float:
        fractions = []
        if self.total_steps:
            fractions.append(self.state.step / self.total_steps)
        if self.budget_seconds:
            fractions.append(self.state.train_seconds / self.budget_seconds)
        return max(fractions)

    def done(self) -> bool:
        return self.progress_fraction() >= 1.0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The next training batch and its labels (``None`` for unconditional runs)."""
        state = self.state
        if state.batch_in_epoch >= self.steps_per_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        if self._perm is None or self._perm[0] != state.epoch:
            gen = torch.Generator().manual_seed(self.config.seed * 100003 + state.epoch)
            self._perm = (state.epoch, torch.randperm(len(self.train_images), generator=gen))
        size = self.config.batch_size
        index = self._perm[1][state.batch_in_epoch * size : (state.batch_in_epoch + 1) * size]
        state.batch_in_epoch += 1
        index = distributed.shard_batch(index).to(self.train_images.device)  # this rank's part
        labels = self.train_labels[index] if self.train_labels is not None else None
        batch = self.train_images[index]
        if self.config.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return (batch if self.data.continuous else batch.long()), labels

    @property
    def unit(self) -> str:
        """``bpd`` (bits/dim of discrete data) or ``npd`` (nats/dim of continuous data)."""
        return "npd" if self.data.continuous else "bpd"

    def train_step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> float | None:
        """One optimizer step; returns the loss in bits/dim (nats/dim for continuous data), or
        None if it was not finite. Under DDP: the loss of the global batch, the same on every rank,
        so that every rank skips the same steps."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        loss = self.loss_fn(x, labels, self.noise).mean()  # per-image losses are float32
        if self.data.continuous:
            loss = loss * math.log(2)
        self.optimizer.zero_grad(set_to_none=True)
        reported = distributed.all_reduce_mean(loss.detach())
        penalty = self.model.training_penalty()  # nats/dim; trained on, never reported as loss
        if penalty is not None:
            loss = loss + penalty.float().mean() / (1 if self.data.continuous else math.log(2))
        if not torch.isfinite(reported):
            if distributed.is_distributed():  # DDP pairs each forward with a backward: run it,
                loss.backward()  # then drop its gradients
                self.optimizer.zero_grad(set_to_none=True)
            return None
        if self.scaler is None:
            loss.backward()
        else:  # fp16: a scaled loss, so that small gradients do not underflow
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        grad_norm = clip_gradient_norm(self.model.parameters(), self.config.grad_clip)
        if self.scaler is not None:  # on overflowing gradients it skips the step, lowers the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self._update_average()
            return float(reported)
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self._update_average()
        return float(reported)

    def _update_average(self) -> None:
        """After an optimizer step (the one that becomes step ``state.step + 1``)."""
        if self.average is not None:
            self.average.update(self.model, self.state.step + 1)

    def adopt_average(self) -> None:
        """Training is over: give the model the averaged weights (``ema`` > 0), which the
        evaluation, the samples and the saved model then use. The checkpoint keeps both."""
        if self.average is not None:
            self.average.copy_to(self.model)

    def _recover(self, bad_in_row: int) -> None:
        path = self.run_dir / CHECKPOINT_FILE
        state = self.state
        if state.restores >= self.config.max_restores:
            raise DensitylabError(
                f"training keeps diverging (non-finite loss) after {state.restores} restores with "
                f"lower learning rates; lower --lr (the last good checkpoint is kept in {path})"
            )
        skipped, restores, lr_scale = state.skipped_steps, state.restores + 1, state.lr_scale * 0.5
        seconds = state.train_seconds  # time spent still counts against a time budget
        distributed.barrier()  # rank 0 has written its last checkpoint before anyone reads it
        self._restore(path, truncate_metrics=True)
        self.state.skipped_steps, self.state.restores = skipped, restores
        self.state.lr_scale, self.state.train_seconds = lr_scale, seconds
        message = (f"non-finite loss {bad_in_row} steps in a row: restored the checkpoint of "
                   f"step {self.state.step} and halved the learning rate (x{lr_scale:g})")
        if distributed.is_main():
            print(f"densitylab: {message}", file=sys.stderr)
        self._log({"step": self.state.step, "event": "restore", "lr_scale": lr_scale})

    def evaluate(self, max_images: int | None = None) -> float:
        """Test bits/dim (nats/dim for continuous data) on the first ``max_images``, in fp32.
        Under DDP each rank scores its share of the images, and the sums are reduced."""
        images = self.data.test[:max_images] if max_images else self.data.test
        labels = self._test_cond(len(images))
        start, stop = distributed.shard(images)  # all of them in a single process
        part_labels = None if labels is None else labels[start:stop]
        with self.average.swapped_in(self.model) if self.average is not None else nullcontext():
            bpd = (bits_per_dim(self.model, images[start:stop], seed=self.config.seed,
                                labels=part_labels) if stop > start else 0.0)
        if distributed.is_distributed():
            total, count = distributed.all_reduce_sum([bpd * (stop - start), float(stop - start)])
            bpd = total / count
        return bpd * math.log(2) if self.data.continuous else bpd

    def fit(self) -> dict[str, Any]:
        """Train until the budget is spent; then evaluate, sample and write the results. The run
        directory's lock is released on return."""
        try:
            self.train_loop()
            return self.finish()
        except (OSError, NoSpaceError) as exc:  # e.g. the disk fills while metrics are appended
            if not isinstance(exc, NoSpaceError) and no_space(exc) is None:
                raise
            raise self._out_of_space(exc) from exc
        finally:
            self.close()

    def train_loop(self) -> None:
        """Optimizer steps until the budget (epochs and/or time) is spent; checkpoints included."""
        cfg, state = self.config, self.state
        if self._needs_data_init:
            self._initialize_model()
        self.model.train()
        bar = Progress(self.total_steps, self.budget_seconds, state.step, state.train_seconds,
                       enabled=self.progress and distributed.is_main(), min_seconds=LOG_SECONDS)
        window, bad_in_row = _Window(), 0
        while not self.done():
            started = time.perf_counter()
            loss = self.train_step(*self.next_batch())
            state.train_seconds += distributed.agree_max(time.perf_counter() - started)
            if loss is None:  # skipped; after max_bad_steps in a row, back to the last checkpoint
                state.skipped_steps, bad_in_row = state.skipped_steps + 1, bad_in_row + 1
                if bad_in_row >= cfg.max_bad_steps:
                    self._recover(bad_in_row)
                    bad_in_row = 0
                continue
            state.step, bad_in_row = state.step + 1, 0
            window.add(loss, cfg.batch_size)
            bar.advance(state.step, state.train_seconds)
            if state.step % cfg.log_every == 0:
                self._log_window(window, bar)
            if state.step % cfg.eval_every == 0:
                self._evaluate_during_training(bar)
            if state.step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close(state.step, state.train_seconds)
        self.save_checkpoint()

    def _initialize_model(self) -> None:
        """Before the first step: the data-dependent initialisation (and a table's
        standardisation, fitted on the whole train split), then the step-0 checkpoint."""
        standardize = getattr(self.model, "standardize", None)
        if self.data.standardize and standardize is not None:
            standardize.fit(self.train_images)
        self.model.initialize(self.train_images[:4096])
        distributed.broadcast_module(self.model)  # every rank starts from rank 0's numbers
        if self.average is not None:  # the average starts from the initialised weights
            self.average = WeightAverage(self.model, self.config.ema)
        self.save_checkpoint()  # step 0: a kill or an early divergence can always go back here
        self._needs_data_init = False

    def _log_window(self, window: _Window, bar: Progress) -> None:
        """One metrics record (and progress line) for the steps since the last one."""
        state, speed = self.state, window.images_per_second()
        loss = window.mean_loss()
        self._log({"step": state.step, "epoch": state.epoch, f"train_{self.unit}": loss,
                   "lr": self.learning_rate(), "images_per_s": speed,
                   "train_seconds": state.train_seconds, **self.model.step_metrics()})
        bar.report(state.step, state.train_seconds,
                   {f"train {self.unit}": f"{loss:.3f}", "lr": f"{self.learning_rate():.2g}",
                    "img/s": f"{speed:.0f}"})
        window.reset()

    def _evaluate_during_training(self, bar: Progress) -> None:
        """Test score on the first ``eval_images`` test examples, logged and shown."""
        cfg, step = self.config, self.state.step
        test_bpd = self.evaluate(cfg.eval_images)
        self._log({"step": step, f"test_{self.unit}": test_bpd})
        if distributed.is_main():
            unit = "nats/dim" if self.data.continuous else "bits/dim"
            bar.line(f"step {step}: test {unit} {test_bpd:.4f} "
                     f"(first {min(cfg.eval_images, len(self.data.test))} test images)")

    def finish(self) -> dict[str, Any]:
        """Evaluate on the whole test split; rank 0 writes the model, samples and results.

        This comes after the budget (it is not training), so the run says how long it takes."""
        started = time.perf_counter()
        samples = self.config.sample_count if len(self.data.shape) == 3 else max(
            self.config.sample_count, 2000) if self.config.sample_count else 0
        self._notice(f"training done ({self.state.step} steps, {self.state.train_seconds:.1f} s of "
                     f"training); now, outside the budget: scoring all {len(self.data.test):,} test "
                     f"images{f' and drawing {samples} samples' if samples else ''}")
        self.adopt_average()
        test_bpd = self.evaluate()
        self._log({"step": self.state.step, f"test_{self.unit}_full": test_bpd})
        self.model.eval()
        if distributed.is_main():
            self.save_model()
            self._save_samples()
        results = {
            "model": self.config.model,
            "data": self.config.data,
            "conditional": bool(self.n_classes or self.data.context_features),
            "levels": self.data.levels,
            "shape": list(self.data.shape),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "steps": self.state.step,
            "epochs": self.state.step / self.steps_per_epoch,
            "train_seconds": self.state.train_seconds,
            "skipped_steps": self.state.skipped_steps,
            "test_images": len(self.data.test),
            "unit": "nats/dim" if self.data.continuous else "bits/dim",
            "test_nats_per_dim" if self.data.continuous else "test_bits_per_dim": test_bpd,
            "bound": "exact density" if self.data.continuous
            else "dequantization (one sample per image)" if self.model.family == "flow" else "exact",
            "samples": SAMPLES_FILE,
            "finish_seconds": time.perf_counter() - started,  # evaluation + sampling, after the budget
        }
        if distributed.is_main():
            atomic_write_json(self.run_dir / RESULTS_FILE, results)
        self._notice(f"evaluation and sampling took {results['finish_seconds']:.1f} s")
        if self.writer is not None:
            self.writer.close()
        return results

    def _notice(self, message: str) -> None:
        """A line for the person watching (rank 0, and only when progress is shown)."""
        if self.progress and distributed.is_main():
            print(f"densitylab: {message}", file=sys.stderr, flush=True)

    def _save_samples(self) -> None:
        """``samples.png`` with ``sample_count`` samples (none when it is 0)."""
        if self.config.sample_count == 0:
            return
        generator = torch.Generator().manual_seed(self.config.seed)
        if len(self.data.shape) != 3:  # vectors: a histogram next to the data's
            from densitylab.viz.points import save_points_plot

            count = max(self.config.sample_count, 2000)
            cond = self._test_cond(count)
            if cond is not None:  # conditional samples at the test set's contexts
                count = len(cond)
                cond = cond.to(self.device)
            samples = self.model.sample(count, cond, generator=generator)
            save_points_plot(self.run_dir / SAMPLES_FILE, samples, "samples", self.model.levels,
                             reference=self.data.test)
        elif self.n_classes:  # one row per class
            per_class = max(1, self.config.sample_count // self.n_classes)
            labels = torch.arange(self.n_classes, device=self.device).repeat_interleave(per_class)
            samples = self.model.sample(len(labels), labels, generator=generator)
            save_grid(self.run_dir / SAMPLES_FILE, samples, self.model.levels, nrow=per_class,
                      row_labels=[f"class {k}" for k in range(self.n_classes)])
        else:
            samples = self.model.sample(self.config.sample_count, generator=generator)
            save_grid(self.run_dir / SAMPLES_FILE, samples, self.model.levels)


class _Window:
    """The losses and images of the training steps since the last log record."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss_sum, self.steps, self.images, self.start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, images: int) -> None:
        self.loss_sum, self.steps, self.images = self.loss_sum + loss, self.steps + 1, self.images + images

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)

    def images_per_second(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)


def resume_config(run_dir: str | Path, overrides: dict[str, Any], clear_budget: bool = False) -> RunConfig:
    """The saved config of ``run_dir``; only the budget (epochs, time) may be changed, and how
    the run runs (threads, device, precision, compile). ``clear_budget`` drops the time budget."""
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        raise DensitylabError(
            f"{run_dir} holds no run to resume (no {CONFIG_FILE}); start one with "
            "'densitylab train MODEL --out DIR'"
        )
    config = RunConfig.load(Path(run_dir) / CONFIG_FILE)
    allowed = {"epochs", "time_budget", "threads", "device", "precision", "compile"}
    refused = {k for k, v in overrides.items() if v is not None and k not in allowed}
    if refused:
        raise DensitylabError(
            f"--resume continues the run as configured; only the budget can change, not "
            f"{', '.join(sorted(refused))}"
        )
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    if clear_budget:
        config.time_budget = None
    return config.validate()
