"""Faults that need real processes: two writers at once, a full disk and a file-size limit during a
checkpoint, kill -9 at random points then --resume, unwritable directories, --debug."""

from __future__ import annotations

import fcntl
import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from densitylab.cli import main
from densitylab.train.checkpoint import read_checkpoint
from densitylab.train.rundir import CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, METRICS_FILE, MODEL_FILE
from tests.faults.helpers import (
    cli_env,
    copy_run,
    run_cli,
    snapshot,
    start_cli,
    tiny_config,
)


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("densitylab: error:") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _config_file(tmp_path: Path, **overrides) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(tiny_config(**overrides).to_yaml())
    return str(path)


def _step(run: Path) -> int | None:
    """The step of the run's checkpoint, read from its header alone (cheap enough to poll)."""
    try:
        with open(run / CHECKPOINT_FILE, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            metadata = json.loads(handle.read(size))["__metadata__"]
        return json.loads(metadata["densitylab"])["state"]["step"]
    except (OSError, ValueError, KeyError):
        return None


def test_two_writers_at_once_the_second_is_refused(tmp_path):
    run = tmp_path / "run"
    first = start_cli(["train", "--config", _config_file(tmp_path, epochs=None, time_budget="120s"),
                       "--out", str(run), "--no-progress"])
    try:
        deadline = time.time() + 120
        while _step(run) is None and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()[1]
        assert (run / LOCK_FILE).read_text().strip() == str(first.pid)
        config = (run / CONFIG_FILE).read_text()
        second = start_cli(["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--seed", "1",
                            "--out", str(run), "--no-progress"])
        third = start_cli(["train", "--resume", str(run), "--no-progress"])
        for other in (second, third):
            out, err = other.communicate(timeout=120)
            assert other.returncode == 2, err
            assert err.count("\n") == 1 and f"in use by a running densitylab process {first.pid}" in err
        assert first.poll() is None  # still training, its files its own
        assert (run / CONFIG_FILE).read_text() == config
    finally:
        first.kill()
        first.wait()
    records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()[:-1]]
    assert all(r.get("event") != "resume" for r in records)


ENOSPC_ON_THIRD_CHECKPOINT = """
import errno, os
from densitylab.train import files
_real, _count = files.write_chunks, [0]
def _failing(handle, data):
    if ".checkpoint.safetensors." in handle.name:
        _count[0] += 1
        if _count[0] == 3:  # half of the file is written, then the disk is full
            handle.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _real(handle, data)
files.write_chunks = _failing
"""


def test_disk_full_during_a_checkpoint(tmp_path, finished_run):
    run = tmp_path / "run"
    result = run_cli(["train", "--config", _config_file(tmp_path), "--out", str(run), "--no-progress"],
                     prelude=ENOSPC_ON_THIRD_CHECKPOINT)
    _one_line_error(result, "no space left on the device writing", CHECKPOINT_FILE,
                    "the last good checkpoint is step 2", f"densitylab train --resume {run}")
    assert read_checkpoint(run / CHECKPOINT_FILE)[1]["state"]["step"] == 2  # intact, verified
    assert not list(run.glob(".*.tmp")) and not (run / MODEL_FILE).exists()
    resumed = run_cli(["train", "--resume", str(run), "--no-progress"])  # space freed
    assert resumed.returncode == 0, resumed.stderr
    final, reference = load_file(str(run / MODEL_FILE)), load_file(str(finished_run / MODEL_FILE))
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)  # as if nothing had happened


def test_file_size_limit_during_the_first_checkpoint(tmp_path, finished_run):
    run = tmp_path / "run"
    limit = (finished_run / CHECKPOINT_FILE).stat().st_size // 2

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    args = ["train", "--config", _config_file(tmp_path), "--out", str(run), "--no-progress"]
    result = run_cli(args, preexec_fn=limited)
    _one_line_error(result, "file-size limit (ulimit -f) is reached writing", "no checkpoint was written yet",
                    "raise the limit")
    assert not (run / CHECKPOINT_FILE).exists() and not list(run.glob(".*.tmp"))
    resumed = run_cli(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert "starting it afresh" in resumed.stderr


def test_kill_9_at_five_random_points_then_resume_is_bit_identical(tmp_path):
    # the kills fall in the first 25 steps of 66: on a fast CPU this model trains ~90 steps/s, so
    # a margin of 40 steps keeps the run alive through the poll and the random delay before a kill
    config = _config_file(tmp_path, epochs=0.7, batch_size=16, checkpoint_every=3)
    total = 66  # ceil(0.7 * (1500 // 16))
    reference = start_cli(["train", "--config", config, "--out", str(tmp_path / "ref"), "--no-progress"])
    run = tmp_path / "killed"
    rng = random.Random(16)
    kills = 0
    for target in sorted(rng.sample(range(1, total - 40), 5)):
        started = (run / CONFIG_FILE).exists()
        args = ["--resume", str(run)] if started else ["--config", config, "--out", str(run)]
        process = start_cli(["train", *args, "--no-progress"])
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and (_step(run) or 0) < target:
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.1))  # anywhere, mid-write included
        assert process.poll() is None, "the run ended before it could be killed; make it longer"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills == 5 and not (run / MODEL_FILE).exists()
    resumed = run_cli(["train", "--resume", str(run), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    final, expected = load_file(str(run / MODEL_FILE)), load_file(str(tmp_path / "ref" / MODEL_FILE))
    assert final.keys() == expected.keys()
    for key in final:
        assert torch.equal(final[key], expected[key]), key
    records = [json.loads(line) for line in (run / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records if "train_bpd" in r] == list(range(1, total + 1))
    with open(run / LOCK_FILE) as handle:  # every holder has exited: the lock is free
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.fixture
def shared_dir():
    """A directory another user can enter (pytest's own tmp dirs are private to their owner)."""
    path = Path(tempfile.mkdtemp(prefix="densitylab-faults-"))
    path.chmod(0o755)
    yield path
    for sub in path.rglob("*"):
        if sub.is_dir():
            sub.chmod(0o755)
    shutil.rmtree(path)


DENY_WRITES_UNDER = """
import os
_access, _closed = os.access, os.environ["DENSITYLAB_TEST_CLOSED"]
def _denying(path, mode, *args, **kwargs):
    if str(path).startswith(_closed) and mode & os.W_OK:
        return False
    return _access(path, mode, *args, **kwargs)
os.access = _denying
"""


def _run_unprivileged(args: list[str], closed: Path, home: Path):
    """Root may write anywhere: run the command as nobody; where nobody cannot run this Python
    (an interpreter under /root), deny the writes the way the kernel would answer ``os.access``."""
    env = cli_env() | {"HOME": str(home), "DENSITYLAB_TEST_CLOSED": str(closed)}
    if os.geteuid() != 0:
        return run_cli(args, env=env)
    nobody = {"user": 65534, "group": 65534}
    try:  # can nobody import densitylab here (its interpreter and sources readable)?
        usable = subprocess.run([sys.executable, "-c", "import densitylab.cli"], env=env,
                                capture_output=True, timeout=120, **nobody).returncode == 0
    except PermissionError:
        usable = False
    if usable:
        return run_cli(args, env=env, **nobody)
    return run_cli(args, env=env, prelude=DENY_WRITES_UNDER)


@pytest.mark.parametrize("command", ["train", "sample"])
def test_unwritable_directory_is_one_line(command, shared_dir, finished_run):
    run = copy_run(finished_run, shared_dir / "run")
    for path in [run, *run.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0))
    closed = shared_dir / "closed"
    closed.mkdir()
    closed.chmod(0o555)
    before = snapshot(run)
    args = (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--out", str(closed / "new")]
            if command == "train" else ["sample", str(run), "-n", "2", "-o", str(closed / "g.png")])
    result = _run_unprivileged(args, closed, shared_dir)
    _one_line_error(result, "no permission to write in", str(closed))
    assert not list(closed.iterdir()) and snapshot(run) == before


def test_debug_shows_the_traceback_and_plain_runs_do_not(tmp_path, capsys):
    args = ["eval", str(tmp_path / "nothing")]
    plain = run_cli(args)
    _one_line_error(plain, "does not exist")
    assert "Traceback" not in plain.stderr
    shown = run_cli(args, env=cli_env() | {"DENSITYLAB_DEBUG": "1"})
    assert shown.returncode == 2
    assert "Traceback" in shown.stderr and "does not exist" in shown.stderr.splitlines()[-1]
    assert main(["eval", "--debug", str(tmp_path / "nothing")]) == 2  # the flag, anywhere
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith("densitylab: error:")
