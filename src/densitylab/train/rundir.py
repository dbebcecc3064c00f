"""The run directory: its file names, its one-writer lock, and the checks made before writing.

A run directory holds ``config.yaml``, ``metrics.jsonl``, ``checkpoint.safetensors`` (the latest
training state), and at the end ``model.safetensors``, ``results.json`` and ``samples.png``
(``densitylab sample`` adds ``grid.png``; TensorBoard events go under ``tb/``). Every file is
written atomically (:mod:`densitylab.train.files`) and every checkpoint carries per-tensor
checksums (:mod:`densitylab.train.checkpoint`).

One process writes a run directory at a time: ``train`` and ``train --resume`` hold an advisory
lock (``fcntl.flock`` on ``.densitylab.lock``, which records the holder's PID) for the run's
lifetime; the operating system releases it when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from densitylab.errors import DensitylabError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
MODEL_FILE = "model.safetensors"
RESULTS_FILE = "results.json"
SAMPLES_FILE = "samples.png"  # drawn at the end of training
GRID_FILE = "grid.png"  # the default output of ``densitylab sample``
TENSORBOARD_DIR = "tb"
LOCK_FILE = ".densitylab.lock"
FINAL_FILES = (MODEL_FILE, RESULTS_FILE, SAMPLES_FILE)
RUN_FILES = (CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE, *FINAL_FILES, TENSORBOARD_DIR)
WEIGHT_FILES = (MODEL_FILE, CHECKPOINT_FILE)  # the two copies of a run's weights, preferred first


def model_file(path: str | Path) -> Path:
    """The weights of a run: ``path`` itself if it is a file, else the run directory's
    ``model.safetensors``, or its ``checkpoint.safetensors`` while training has not finished."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise DensitylabError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise DensitylabError(f"{path} is neither a run directory nor a checkpoint file")
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise DensitylabError(f"{path} holds no {MODEL_FILE} or {CHECKPOINT_FILE}; train it first")


def other_copy(path: Path) -> Path | None:
    """The other weights file of the same run directory (model <-> checkpoint), if ``path`` is one."""
    if path.name == MODEL_FILE:
        return path.with_name(CHECKPOINT_FILE)
    if path.name == CHECKPOINT_FILE:
        return path.with_name(MODEL_FILE)
    return None


def holds_run_files(path: Path) -> bool:
    """Whether ``path`` holds anything besides the lock file."""
    return path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir())


def check_writable(path: str | Path, flag: str, file: bool = False) -> None:
    """Refuse early (one line) when ``path`` could not be created or written: the nearest existing
    ancestor must be a directory this process may write into. ``file``: ``path`` names a file,
    which may already exist (it is replaced)."""
    path = Path(path).absolute()
    if file and path.is_file():
        if not os.access(path, os.W_OK):
            raise DensitylabError(f"{flag} {path}: no permission to replace that file; choose "
                                  f"another {flag}")
        path = path.parent
    target = path
    while not target.exists():
        if target.parent == target:
            break
        target = target.parent
    if target.exists() and not target.is_dir():
        raise DensitylabError(f"{flag} {path}: {target} is a file, not a directory; choose another {flag}")
    if not os.access(target, os.W_OK | os.X_OK):
        raise DensitylabError(f"{flag} {path}: no permission to write in {target}; choose a directory "
                              "you can write to")


def holder_pid(run_dir: Path) -> int | None:
    """The PID written by the process that holds the lock (None when unknown)."""
    try:
        text = (run_dir / LOCK_FILE).read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def _refusal(run_dir: Path) -> DensitylabError:
    pid = holder_pid(run_dir)
    who = f"process {pid}" if pid is not None else "another process"
    return DensitylabError(f"{run_dir} is in use by a running densitylab {who}; wait for it to end, "
                           "or choose another --out")


class RunLock:
    """An exclusive, advisory lock on one run directory, held until :meth:`release` (or exit)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(self.run_dir) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def check_not_locked(run_dir: Path) -> None:
    """Refuse, naming the holder, when another process holds ``run_dir``'s lock (nothing is created)."""
    lock = run_dir / LOCK_FILE
    if not lock.is_file():
        return
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(run_dir) from None
    finally:
        os.close(fd)


def check_new_run(run_dir: Path, force: bool, probe_lock: bool = True) -> None:
    """What ``train --out`` checks before it writes: a directory (or nothing) that no running
    process holds, empty unless ``--force``, and writable."""
    if run_dir.exists() and not run_dir.is_dir():
        raise DensitylabError(f"{run_dir} is a file, not a run directory; choose another --out")
    if probe_lock:
        check_not_locked(run_dir)
    if holds_run_files(run_dir) and not force:
        raise DensitylabError(
            f"{run_dir} already holds files of a run; use --resume to continue it, "
            "--force to overwrite it, or choose another --out"
        )
    check_writable(run_dir, "--out")


def resume_starts_afresh(run_dir: Path, probe_lock: bool = True) -> bool:
    """``train --resume``'s checks. True when the run was stopped before its first checkpoint
    (it then starts again from its ``config.yaml``); an error when there is nothing to resume."""
    if probe_lock:
        check_not_locked(run_dir)
    if (run_dir / CHECKPOINT_FILE).is_file():
        return False
    finished = [name for name in FINAL_FILES if (run_dir / name).exists()]
    if finished or not (run_dir / CONFIG_FILE).is_file():
        raise DensitylabError(
            f"{run_dir} has no {CHECKPOINT_FILE} to resume from"
            + (f" (it holds {', '.join(finished)})" if finished else "")
            + "; start it again with --force"
        )
    return True


def clear(run_dir: Path, names: tuple[str, ...]) -> None:
    """Remove run files (and the temporary files a kill may have left)."""
    if not run_dir.is_dir():
        return
    for name in names:
        if not (run_dir / name).is_dir():
            (run_dir / name).unlink(missing_ok=True)
    for leftover in run_dir.glob(".*.tmp"):
        leftover.unlink()
    if TENSORBOARD_DIR in names:
        for event in (run_dir / TENSORBOARD_DIR).glob("events.*"):
            event.unlink()
