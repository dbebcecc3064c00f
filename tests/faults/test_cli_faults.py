"""Table-driven faults: each case damages a copy of a finished tiny run (or holds its lock, or
passes a bad argument), runs one CLI command, and checks the exit code, a fragment of the message
(one line, no traceback) and, where nothing may change, that the run directory did not change."""

from __future__ import annotations

import os
import shutil
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from densitylab.cli import main
from densitylab.data import download
from densitylab.train.checkpoint import read_checkpoint
from densitylab.train.rundir import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    FINAL_FILES,
    METRICS_FILE,
    MODEL_FILE,
    RunLock,
)
from tests.faults.helpers import (
    TINY_FLAGS,
    copy_run,
    flip,
    flip_bit,
    header_region,
    largest_tensor,
    rewrite,
    snapshot,
    tensor_region,
    truncate,
)

TRAIN = ["train", "pixelcnn", "--data", "digits", "--epochs", "0.2", "--no-progress", *TINY_FLAGS]


@dataclass
class Case:
    id: str
    args: list[str]  # {run}: the damaged run directory; {tmp}: a scratch directory
    setup: Callable[[Path, Path, pytest.MonkeyPatch], object] | None = None
    code: int = 2
    fragments: tuple[str, ...] = ()
    unchanged: bool = True  # the run directory must be byte-identical afterwards
    extra: Callable[[Path, Path], None] | None = field(default=None)  # further checks


def _in_progress(run: Path) -> Path:
    """The run as a kill during training leaves it: no final files."""
    for name in FINAL_FILES:
        (run / name).unlink()
    return run


def _flip_tensor(name_prefix: str, file: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        path = run / file
        start, end = tensor_region(path, largest_tensor(path, name_prefix))
        flip(path, start + max(0, (end - start - 16) // 2), min(16, end - start))
    return damage


def _flip_text(file: str, needle: bytes, offset: int = 0, bit: int = 0) -> Callable[[Path], None]:
    """Flip one bit of the byte ``offset`` after the first ``needle`` in the file's header."""
    def damage(run: Path) -> None:
        path = run / file
        position = path.read_bytes().index(needle) + offset
        assert position < header_region(path)[1]
        flip_bit(path, position, bit)
    return damage


def setup(*steps: Callable[[Path], object]) -> Callable[[Path, Path, pytest.MonkeyPatch], object]:
    def run_steps(run: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> object:
        return [step(run) for step in steps]
    return run_steps


def _tensor_edit(edit: Callable[[dict, dict], None], file: str = CHECKPOINT_FILE) -> Callable[[Path], None]:
    return lambda run: rewrite(run / file, edit)


def _widen(key_prefix: str) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, header: dict) -> None:
        key = next(k for k in tensors if k.startswith(key_prefix) and tensors[k].dim() >= 1)
        tensors[key] = torch.zeros(tensors[key].shape[0] + 1, *tensors[key].shape[1:])
    return edit


def _drop(prefix: str) -> Callable[[dict, dict], None]:
    def edit(tensors: dict, header: dict) -> None:
        for key in [k for k in tensors if k.startswith(prefix)]:
            del tensors[key]
    return edit


def _as_float64(tensors: dict, header: dict) -> None:
    tensors["optim.0.exp_avg"] = tensors["optim.0.exp_avg"].double()


def _integer_weights(tensors: dict, header: dict) -> None:
    key = next(k for k in tensors if k.startswith("model.") and tensors[k].is_floating_point())
    tensors[key] = torch.zeros(tensors[key].shape, dtype=torch.int64)


def _foreign_index(tensors: dict, header: dict) -> None:
    tensors["optim.999.exp_avg"] = tensors["optim.0.exp_avg"].clone()


def _extra_tensor(tensors: dict, header: dict) -> None:
    tensors["model.surplus.weight"] = torch.zeros(3)


def _hold_lock(run: Path) -> RunLock:
    return RunLock(run)


def _model_as_checkpoint(run: Path) -> None:
    shutil.copyfile(run / MODEL_FILE, run / CHECKPOINT_FILE)


def _killed_before_first_checkpoint(run: Path) -> None:
    for path in run.iterdir():
        if path.name not in (CONFIG_FILE, METRICS_FILE) and path.is_file():
            path.unlink()
    (run / METRICS_FILE).write_text('{"step": 1, "train_bpd": 3.0}\n{"st')  # cut mid-record


def _no_checkpoint_but_finished(run: Path) -> None:
    (run / CHECKPOINT_FILE).unlink()


def _offline(run: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url, target, sha, timeout):
        raise urllib.error.URLError("offline")
    monkeypatch.setattr(download, "_download", refuse)
    (tmp / "empty").mkdir()


def _resumed_model_is_rewritten(run: Path, tmp: Path) -> None:
    read_checkpoint(run / MODEL_FILE)  # verifies: intact again


def _started_afresh(run: Path, tmp: Path) -> None:
    tensors, header = read_checkpoint(run / CHECKPOINT_FILE)
    assert header["state"]["step"] == 5 and (run / MODEL_FILE).is_file()


RESUME = ["train", "--resume", "{run}", "--no-progress"]
EVAL = ["eval", "{run}", "--max-images", "20"]
SAMPLE = ["sample", "{run}", "-n", "2", "-o", "{tmp}/grid.png", "--no-progress"]
CORRUPT_CKPT = f"{CHECKPOINT_FILE} is corrupt"
CORRUPT_MODEL = f"{MODEL_FILE} is corrupt"

CASES = [
    # a second writer: the lock names the process holding it; nothing is touched
    Case("lock-new-run-into-held-dir", [*TRAIN, "--out", "{run}"], setup(_hold_lock),
         fragments=("in use by a running densitylab process {pid}",)),
    Case("lock-force-into-held-dir", [*TRAIN, "--out", "{run}", "--force"], setup(_hold_lock),
         fragments=("process {pid}",)),
    Case("lock-resume-held-dir", RESUME, setup(_hold_lock), fragments=("process {pid}",)),
    Case("lock-resume-held-in-progress-run", RESUME, setup(_in_progress, _hold_lock),
         fragments=("process {pid}",)),
    # 16 bytes flipped in tensor data
    Case("ckpt-only-flipped-eval", EVAL, setup(_in_progress, _flip_tensor("model.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, "checksum of tensor model.", "no other copy")),
    Case("ckpt-only-flipped-sample", SAMPLE, setup(_in_progress, _flip_tensor("model.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, "no other copy")),
    Case("ckpt-only-flipped-resume", RESUME, setup(_in_progress, _flip_tensor("model.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, "no other copy")),
    Case("model-flipped-eval", EVAL, setup(_flip_tensor("model.", MODEL_FILE)),
         fragments=(CORRUPT_MODEL, f"{CHECKPOINT_FILE} is intact", "--resume")),
    Case("model-flipped-sample", SAMPLE, setup(_flip_tensor("model.", MODEL_FILE)),
         fragments=(CORRUPT_MODEL, f"{CHECKPOINT_FILE} is intact")),
    Case("model-flipped-resume-rewrites-it", RESUME, setup(_flip_tensor("model.", MODEL_FILE)),
         code=0, unchanged=False, extra=_resumed_model_is_rewritten),
    Case("ckpt-flipped-resume-model-intact", RESUME, setup(_flip_tensor("model.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, f"{MODEL_FILE} is intact", "cannot be resumed")),
    Case("ckpt-flipped-eval-uses-model", EVAL, setup(_flip_tensor("model.", CHECKPOINT_FILE)), code=0),
    Case("both-flipped-eval", EVAL,
         setup(_flip_tensor("model.", MODEL_FILE), _flip_tensor("model.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_MODEL, "corrupt too")),
    Case("ckpt-optimizer-data-flipped-resume", RESUME, setup(_flip_tensor("optim.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, "checksum of tensor optim.")),
    Case("ckpt-rng-data-flipped-resume", RESUME, setup(_flip_tensor("rng.", CHECKPOINT_FILE)),
         fragments=(CORRUPT_CKPT, "checksum of tensor rng.")),
    # truncated files
    Case("model-empty-eval", EVAL, setup(lambda run: truncate(run / MODEL_FILE, 0)),
         fragments=(CORRUPT_MODEL, "truncated", f"{CHECKPOINT_FILE} is intact")),
    Case("model-cut-in-length-eval", EVAL, setup(lambda run: truncate(run / MODEL_FILE, 5)),
         fragments=(CORRUPT_MODEL, "truncated")),
    Case("model-cut-in-header-eval", EVAL,
         setup(lambda run: truncate(run / MODEL_FILE, sum(header_region(run / MODEL_FILE)) // 2)),
         fragments=(CORRUPT_MODEL, "truncated")),
    Case("model-cut-in-data-eval", EVAL,
         setup(lambda run: truncate(run / MODEL_FILE, (run / MODEL_FILE).stat().st_size - 100)),
         fragments=(CORRUPT_MODEL,)),
    Case("ckpt-last-byte-cut-resume", RESUME,
         setup(lambda run: truncate(run / CHECKPOINT_FILE, (run / CHECKPOINT_FILE).stat().st_size - 1)),
         fragments=(CORRUPT_CKPT, f"{MODEL_FILE} is intact")),
    # bit flips in the header: length, safetensors entries, densitylab metadata, checksums
    Case("model-length-bit-eval", EVAL, setup(lambda run: flip_bit(run / MODEL_FILE, 0, 3)),
         fragments=(CORRUPT_MODEL,)),
    Case("model-dtype-bit-eval", EVAL, setup(_flip_text(MODEL_FILE, b'"dtype":"F32"', 9)),
         fragments=(CORRUPT_MODEL,)),
    Case("model-offsets-bit-eval", EVAL, setup(_flip_text(MODEL_FILE, b'"data_offsets":[', 16, 1)),
         fragments=(CORRUPT_MODEL,)),
    Case("model-config-digit-bit-eval", EVAL,
         setup(_flip_text(MODEL_FILE, b'hidden_channels\\": 4', 19)),
         fragments=(CORRUPT_MODEL, "checksum of its header")),
    Case("model-checksum-bit-sample", SAMPLE,
         setup(_flip_text(MODEL_FILE, b'{\\"header\\": \\"', 15)),
         fragments=(CORRUPT_MODEL, "checksum")),
    Case("ckpt-pickle-resume", RESUME,
         setup(lambda run: (run / CHECKPOINT_FILE).write_bytes(b"\x80\x04K\x01.")),
         fragments=(CORRUPT_CKPT,)),
    # intact files whose content does not fit the model / optimizer
    Case("ckpt-optimizer-shape-resume", RESUME, setup(_tensor_edit(_widen("optim."))),
         fragments=("optimizer tensor optim.", "has shape (", "its parameter (model.")),
    Case("ckpt-optimizer-dtype-resume", RESUME, setup(_tensor_edit(_as_float64)),
         fragments=("optimizer tensor optim.0.exp_avg", "dtype float64", "dtype float32")),
    Case("ckpt-optimizer-foreign-index-resume", RESUME, setup(_tensor_edit(_foreign_index)),
         fragments=("optim.999.exp_avg refers to parameter 999",)),
    Case("ckpt-model-shape-resume", RESUME, setup(_tensor_edit(_widen("model."))),
         fragments=("tensor model.", "has shape (", "the model expects shape (")),
    Case("model-shape-eval", EVAL, setup(_tensor_edit(_widen("model."), MODEL_FILE)),
         fragments=(MODEL_FILE, "tensor model.", "the model expects shape (")),
    Case("model-integer-weights-eval", EVAL, setup(_tensor_edit(_integer_weights, MODEL_FILE)),
         fragments=("dtype int64", "the model expects shape")),
    Case("model-missing-tensor-sample", SAMPLE, setup(_tensor_edit(_drop("model.out"), MODEL_FILE)),
         fragments=(MODEL_FILE, "lacks tensor model.out")),
    Case("model-surplus-tensor-eval", EVAL, setup(_tensor_edit(_extra_tensor, MODEL_FILE)),
         fragments=("model.surplus.weight, which the model does not have",)),
    Case("ckpt-without-rng-resume", RESUME, setup(_tensor_edit(_drop("rng."))),
         fragments=("no RNG state", "'densitylab sample' still work from model.safetensors")),
    Case("ckpt-without-optimizer-resume", RESUME, setup(_model_as_checkpoint, _in_progress),
         fragments=("no optimizer state", "'densitylab sample' still work from checkpoint.safetensors")),
    # arguments
    Case("epochs-nan", [*TRAIN[:4], *TRAIN[6:], "--epochs", "nan", "--out", "{tmp}/new"],
         fragments=("--epochs must be a positive finite number",)),
    Case("epochs-inf", [*TRAIN[:4], *TRAIN[6:], "--epochs", "inf", "--out", "{tmp}/new"],
         fragments=("--epochs must be a positive finite number",)),
    Case("lr-inf", [*TRAIN, "--lr", "inf", "--out", "{tmp}/new"], fragments=("--lr",)),
    Case("resume-epochs-nan", [*RESUME, "--epochs", "nan"], fragments=("--epochs",)),
    Case("sample-output-is-directory", ["sample", "{run}", "-n", "2", "-o", "{tmp}"],
         fragments=("is a directory",)),
    Case("sample-temperature-nan", [*SAMPLE, "--temperature", "nan"], fragments=("--temperature",)),
    Case("sample-temperature-inf", [*SAMPLE, "--temperature", "inf"], fragments=("--temperature",)),
    Case("eval-max-images-negative", ["eval", "{run}", "--max-images", "-5"],
         fragments=("--max-images must be at least 1",)),
    Case("eval-max-images-zero", ["eval", "{run}", "--max-images", "0"],
         fragments=("--max-images must be at least 1",)),
    Case("out-is-a-file", [*TRAIN, "--out", "{run}/config.yaml"], fragments=("is a file",)),
    Case("data-dir-without-idx-files",
         ["train", "pixelcnn", "--data", "fashion-mnist", "--data-dir", "{tmp}/empty", "--epochs", "1",
          "--out", "{tmp}/new"], _offline, fragments=("--data-dir {tmp}/empty is the only place looked at",)),
    # runs stopped early
    Case("resume-before-first-checkpoint", RESUME, setup(_killed_before_first_checkpoint), code=0,
         fragments=("starting it afresh from its config.yaml",), unchanged=False, extra=_started_afresh),
    Case("resume-finished-run-without-checkpoint", RESUME, setup(_no_checkpoint_but_finished),
         fragments=("no checkpoint.safetensors to resume from", "model.safetensors", "--force")),
    Case("eval-a-checkpoint-file", ["eval", "{run}/checkpoint.safetensors", "--max-images", "20"], code=0),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, finished_run: Path, tmp_path: Path, monkeypatch, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    held = case.setup(run, scratch, monkeypatch) if case.setup else None
    before = snapshot(run)
    args = [a.replace("{run}", str(run)).replace("{tmp}", str(scratch)) for a in case.args]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == case.code, err
    for fragment in case.fragments:
        fragment = fragment.replace("{pid}", str(os.getpid())).replace("{tmp}", str(scratch))
        assert fragment in out + err, err
    if case.code == 2:
        assert err.startswith("densitylab: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err
    if case.unchanged:
        assert snapshot(run) == before
        assert not (scratch / "new").exists()
    if case.extra:
        case.extra(run, scratch)
    del held
