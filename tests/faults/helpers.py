"""Fixtures and file surgery for the fault suite: tiny runs, damaged files, run-directory snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import densitylab
from densitylab.config import RunConfig
from densitylab.train.checkpoint import read_checkpoint, write_checkpoint_file
from densitylab.train.rundir import LOCK_FILE

SRC = str(Path(densitylab.__file__).resolve().parents[1])
TINY = {"hidden_channels": 4, "n_residual_blocks": 1, "output_hidden": 4}
TINY_FLAGS = [arg for key, value in TINY.items() for arg in ("--model-opt", f"{key}={value}")]


def tiny_config(**overrides) -> RunConfig:
    """A PixelCNN on the 8x8 digits that trains in about a second."""
    values = dict(model="pixelcnn", model_config=TINY, data="digits", epochs=0.2, batch_size=64,
                  checkpoint_every=2, eval_every=1000, log_every=1, sample_count=4, threads=1,
                  warmup_steps=2)
    return RunConfig(**(values | overrides))


def snapshot(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under ``run_dir`` (the lock file aside: it records who last held it)."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != LOCK_FILE}


def tensor_region(path: Path, name: str) -> tuple[int, int]:
    """Byte range ``[start, end)`` of tensor ``name``'s data in a safetensors file."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    start, end = json.loads(data[8 : 8 + size])[name]["data_offsets"]
    return 8 + size + start, 8 + size + end


def header_region(path: Path) -> tuple[int, int]:
    """Byte range of a safetensors file's JSON header."""
    size = int.from_bytes(path.read_bytes()[:8], "little")
    return 8, 8 + size


def flip(path: Path, offset: int, count: int = 16) -> None:
    """Invert ``count`` bytes from ``offset``."""
    data = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def truncate(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


def largest_tensor(path: Path, prefix: str) -> str:
    tensors, _ = read_checkpoint(path)
    return max((k for k in tensors if k.startswith(prefix)), key=lambda k: tensors[k].numel())


def rewrite(path: Path, edit) -> None:
    """Rewrite a checkpoint through ``edit(tensors, header)`` with valid checksums: the file is
    intact, its content is what is wrong."""
    tensors, header = read_checkpoint(path)
    edit(tensors, header)
    write_checkpoint_file(path, tensors, header)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def cli_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": path}


def cli_command(args: list[str], prelude: str = "") -> list[str]:
    """``densitylab ARGS`` in a fresh interpreter, after running ``prelude`` (e.g. a patch)."""
    code = f"{prelude}\nimport sys\nfrom densitylab.cli import main\nsys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def run_cli(args: list[str], prelude: str = "", timeout: float = 300,
            **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(args, prelude), env=kwargs.pop("env", cli_env()),
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def start_cli(args: list[str], prelude: str = "", **kwargs) -> subprocess.Popen:
    return subprocess.Popen(cli_command(args, prelude), env=kwargs.pop("env", cli_env()),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
