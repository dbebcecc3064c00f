"""The configuration of one training run, read from and written to ``config.yaml``."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from densitylab.errors import DensitylabError


@dataclass
class RunConfig:
    """Everything that defines a run; flags on the command line override the YAML file."""

    model: str = "pixelcnn"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str = "mnist5k"
    n_bits: int | None = None
    conditional: bool = False  # class-conditional: the dataset's labels feed the model
    data_dir: str | None = None
    context_columns: str | None = None  # a table's columns that condition the others (p(x | c))
    epochs: float | None = None
    time_budget: str | None = None
    batch_size: int = 64
    lr: float | None = None  # None: the model's default_lr
    warmup_steps: int = 100
    schedule: str = "cosine"
    grad_clip: float = 100.0
    ema: float = 0.0  # decay of a moving average of the weights used to evaluate and sample (0: off)
    device: str = "auto"
    precision: str = "fp32"  # fp32, or bf16 / fp16 autocast of the networks (the likelihood stays fp32)
    compile: bool = False  # torch.compile the training loss
    channels_last: bool = False  # images in the NHWC memory layout (faster convolutions on a CPU)
    seed: int = 0
    threads: int | None = None
    eval_every: int = 500
    eval_images: int = 1000
    checkpoint_every: int = 200
    log_every: int = 20
    max_bad_steps: int = 5
    max_restores: int = 3
    sample_count: int = 36

    def validate(self) -> RunConfig:
        if self.epochs is None and self.time_budget is None:
            raise DensitylabError("say how long to train: --epochs E or --time-budget 10m")
        if self.epochs is not None and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise DensitylabError(f"--epochs must be a positive finite number, got {self.epochs}")
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except DensitylabError as exc:
                raise DensitylabError(f"--time-budget: {exc} (--time-budget none: no time limit)") from None
        if self.batch_size < 1:
            raise DensitylabError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise DensitylabError(f"--lr must be a positive finite number, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise DensitylabError(f"grad_clip must be a positive finite number, got {self.grad_clip}")
        if not (math.isfinite(self.ema) and 0.0 <= self.ema < 1.0):
            raise DensitylabError(f"--ema must be in [0, 1) (0: no weight average; 0.999 is usual), "
                                  f"got {self.ema}")
        if self.schedule not in ("cosine", "constant"):
            raise DensitylabError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise DensitylabError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise DensitylabError(f"--precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise DensitylabError(f"--threads must be at least 1, got {self.threads}")
        if self.sample_count < 0:
            raise DensitylabError(f"--sample-count must be >= 0 (0: no samples), got {self.sample_count}")
        for name in ("eval_every", "checkpoint_every", "log_every", "max_bad_steps", "eval_images"):
            if getattr(self, name) < 1:
                raise DensitylabError(f"{name} must be at least 1")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> RunConfig:
        return cls(**coerce_fields(cls, values, source))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from densitylab.train.files import atomic_write_text

        atomic_write_text(Path(path), self.to_yaml())

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        if not path.is_file():
            raise DensitylabError(f"config file {path} not found")
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise DensitylabError(f"{path} is not valid YAML ({exc.__class__.__name__})") from None
        if not isinstance(values, dict):
            raise DensitylabError(f"{path} must hold a mapping of settings")
        return cls.from_dict(values, source=str(path))


def coerce_fields(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Check ``values`` against the field types of dataclass ``cls``, converting where obvious.

    YAML reads ``1e-3`` as a string and users write ``epochs: 5`` for a float; both are accepted.
    A value of the wrong kind is a one-line error naming the setting.
    """
    types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    unknown = set(values) - set(types)
    if unknown:
        raise DensitylabError(
            f"{source}: unknown setting(s) {', '.join(sorted(unknown))}; known settings are "
            f"{', '.join(sorted(types))}"
        )
    return {name: _coerce(name, types[name], value, source) for name, value in values.items()}


def _coerce(name: str, annotation: str, value: Any, source: str) -> Any:
    kinds = {part.strip() for part in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    try:
        if "bool" in kinds:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false", "1", "0", "yes", "no"):
                return str(value).lower() in ("true", "1", "yes")
            raise ValueError
        if "int" in kinds and not isinstance(value, bool):
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if "float" in kinds and not isinstance(value, bool):
            return float(value)
        if "str" in kinds:
            return value if isinstance(value, str) else str(value)
        if annotation.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise DensitylabError(f"{source}: setting {name} must be of type {annotation}, got {value!r}")


_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(text: str | float | int) -> float:
    """``"90s"``, ``"10m"``, ``"1.5h"`` or a number of seconds -> seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|m|min|h)?\s*", str(text))
        if not match:
            raise DensitylabError(f"cannot read duration {text!r}; write e.g. 90s, 10m or 1h")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not (math.isfinite(seconds) and seconds > 0):
        raise DensitylabError(f"duration must be positive, got {text!r}")
    return seconds
