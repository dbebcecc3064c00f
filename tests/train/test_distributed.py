"""Data-parallel training: 2 CPU processes on the gloo backend against one process.

The workers are started the way ``torchrun`` starts them (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` in the environment), and build the same
``Trainer`` a single-process run builds: its ``init_from_env`` joins the group.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.train import distributed
from densitylab.train.trainer import Trainer

PIXELCNN = {"hidden_channels": 8, "n_residual_blocks": 1, "output_hidden": 8}
GLOBAL_BATCH = 16
STEPS_PER_EPOCH = 1500 // GLOBAL_BATCH  # digits: 1,500 training images
TOLERANCE = 1e-5  # max |parameter difference| after 5 and 8 Adam steps (float32, gloo all-reduce)


def _config(steps: float) -> RunConfig:
    """A tiny PixelCNN on digits for ``steps`` steps, with a constant learning rate (after a
    2-step warm-up) so that a run extended on resume takes the steps an uninterrupted one takes."""
    return RunConfig(model="pixelcnn", model_config=PIXELCNN, data="digits",
                     epochs=(steps - 0.5) / STEPS_PER_EPOCH, batch_size=GLOBAL_BATCH, lr=3e-3,
                     schedule="constant", warmup_steps=2, eval_every=5, eval_images=100,
                     checkpoint_every=2, log_every=1, sample_count=4, threads=1, seed=3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _writes_under(root: Path, log: list[str]):
    """An audit hook that records every file opened for writing, renamed, created or removed
    below ``root`` by this process."""
    root_text = str(root.resolve())

    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | Path):
            mode, flags = args[1] or "r", args[2] or 0
            writing = any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR)
            paths = [args[0]] if writing else []
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.truncate"):
            paths = [a for a in args[:2] if isinstance(a, str | Path)]
        else:
            return
        log.extend(f"{event} {p}" for p in paths if str(Path(p).resolve()).startswith(root_text))

    return hook


def _worker(rank: int, world: int, port: int, run_dir: str, phases: list[tuple[dict, bool, str]]) -> None:
    """One rank: for each ``(config, resume, out_dir)`` a Trainer fits ``run_dir``; the rank's
    parameters, the batches it trained on and what it wrote below ``run_dir`` go to ``out_dir``."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    writes: list[str] = []
    sys.addaudithook(_writes_under(Path(run_dir), writes))
    try:
        for config, resume, out_dir in phases:
            writes.clear()
            trainer = Trainer(RunConfig(**config), run_dir, resume=resume, progress=False)
            assert distributed.world_size() == world and distributed.rank() == rank
            batches = []
            next_batch = trainer.next_batch

            def recording_next_batch(next_batch=next_batch, batches=batches):
                x, labels = next_batch()
                batches.append(x.clone())
                return x, labels

            trainer.next_batch = recording_next_batch
            results = trainer.fit()
            state = {k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()}
            state |= {f"batch.{i}": x for i, x in enumerate(batches)}
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            save_file(state, str(Path(out_dir) / f"rank{rank}.safetensors"))
            (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(
                {"writes": writes, "test_bpd": results["test_bits_per_dim"]}))
    finally:
        distributed.shutdown()


def _spawn(run_dir: Path, phases: list[tuple[RunConfig, bool, Path]]) -> None:
    """Two processes on gloo, started as torchrun would start them."""
    phases_arg = [(config.to_dict(), resume, str(out)) for config, resume, out in phases]
    context = mp.start_processes(_worker, args=(2, _free_port(), str(run_dir), phases_arg),
                                 nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the 2-process run did not finish in 240 s (a collective waiting forever?)")


def _load(path: Path) -> tuple[dict, list[torch.Tensor]]:
    """A worker's parameters and the batches it trained on."""
    tensors = load_file(str(path))
    batches = [tensors.pop(f"batch.{i}") for i in range(len(tensors)) if f"batch.{i}" in tensors]
    return tensors, batches


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _train_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train_bpd" in r]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    """2 gloo processes x 8 images against 1 process x 16 images, 5 steps then a resume to 8.

    (a) The ranks hold bit-identical parameters (DDP averages the gradients, every rank takes
    the same Adam step). (b) They match the single-process run to within ``TOLERANCE`` = 1e-5 max
    absolute parameter difference (float32; only the order of the gradient sums differs), the
    logged per-step losses to within 1e-5 bits/dim and the test bits/dim (sharded over the ranks,
    then reduced) to within 1e-5. (c) Only rank 0 wrote into the run directory. (d) A resumed run
    (all ranks load rank 0's checkpoint) continues as the single-process run does.
    """
    single = Trainer(_config(5), tmp_path / "single", progress=False)
    single_results = single.fit()
    assert single_results["steps"] == 5
    single_at_5 = {k: v.clone() for k, v in single.model.state_dict().items()}
    single_files = sorted(p.name for p in (tmp_path / "single").iterdir())
    single_losses = [r["train_bpd"] for r in _train_records(tmp_path / "single")]
    single = Trainer(_config(8), tmp_path / "single", resume=True, progress=False)  # (d)
    assert single.fit()["steps"] == 8

    _spawn(tmp_path / "ddp", [(_config(5), False, tmp_path / "out5"),
                              (_config(8), True, tmp_path / "out8")])
    rank0, batches0 = _load(tmp_path / "out5" / "rank0.safetensors")
    rank1, batches1 = _load(tmp_path / "out5" / "rank1.safetensors")
    probe = Trainer(_config(5), tmp_path / "probe", progress=False)  # the global batches
    for x0, x1 in zip(batches0, batches1, strict=True):
        assert len(x0) == len(x1) == GLOBAL_BATCH // 2
        assert torch.equal(torch.cat([x0, x1]), probe.next_batch()[0])  # disjoint halves
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # (a)
    assert _max_difference(rank0, single_at_5) <= TOLERANCE  # (b)
    ddp_losses = [r["train_bpd"] for r in _train_records(tmp_path / "ddp")]
    assert len(ddp_losses) == 8 and ddp_losses[:5] == pytest.approx(single_losses, abs=1e-5)
    reports = [json.loads((tmp_path / "out5" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["test_bpd"] == pytest.approx(single_results["test_bits_per_dim"], abs=1e-5)
    assert reports[0]["writes"] and reports[1]["writes"] == []  # (c)

    rank0, _ = _load(tmp_path / "out8" / "rank0.safetensors")  # (d)
    rank1, _ = _load(tmp_path / "out8" / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert _max_difference(rank0, single.model.state_dict()) <= TOLERANCE
    saved = load_file(str(tmp_path / "ddp" / "model.safetensors"))  # written by rank 0
    assert all(torch.equal(saved[f"model.{k}"], rank0[k]) for k in rank0)
    assert [r["step"] for r in _train_records(tmp_path / "ddp")] == list(range(1, 9))
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == single_files
    assert json.loads((tmp_path / "out8" / "rank1.json").read_text())["writes"] == []


def test_batch_size_must_split_over_the_processes(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(DensitylabError, match="--batch-size 16 is the global batch .* 3 processes"):
        distributed.check_batch_size(16)
    distributed.check_batch_size(18)


def test_shards_are_disjoint_and_cover_the_batch(monkeypatch):
    batch = torch.arange(12)
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    parts, ranges = [], []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        parts.append(distributed.shard_batch(batch))
        ranges.append(distributed.shard(torch.zeros(10)))
    assert torch.equal(torch.cat(parts), batch)
    assert ranges == [(0, 3), (3, 6), (6, 10)]
