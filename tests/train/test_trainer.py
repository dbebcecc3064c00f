import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.train.checkpoint import read_checkpoint
from densitylab.train.trainer import Trainer

PIXELCNN = {"hidden_channels": 16, "n_residual_blocks": 2, "output_hidden": 16}
REALNVP = {"n_scales": 2, "hidden_channels": 16, "couplings_per_mask": 2, "final_couplings": 2}


def _config(model="pixelcnn", **overrides):
    values = dict(model=model, model_config=PIXELCNN if model == "pixelcnn" else REALNVP,
                  data="digits", epochs=1, batch_size=64, eval_every=10, checkpoint_every=5,
                  log_every=5, sample_count=4, threads=1, warmup_steps=5)
    return RunConfig(**(values | overrides))


def test_fit_writes_a_complete_run_directory(tmp_path):
    results = Trainer(_config(), tmp_path / "run", progress=False).fit()
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors",
                 "results.json", "samples.png"):
        assert (run / name).is_file(), name
    assert results["steps"] == 1500 // 64
    assert json.loads((run / "results.json").read_text())["test_bits_per_dim"] == pytest.approx(
        results["test_bits_per_dim"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("test_bpd" in r for r in records) and any("train_bpd" in r for r in records)
    assert RunConfig.load(run / "config.yaml").model_config == PIXELCNN


def test_existing_run_directory_is_refused_without_force(tmp_path):
    Trainer(_config(epochs=0.1), tmp_path / "run", progress=False).fit()
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    with pytest.raises(DensitylabError, match="--resume"):
        Trainer(_config(epochs=0.1), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    Trainer(_config(epochs=0.1), tmp_path / "run", force=True, progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def _run_cli(args, **kwargs):
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    return subprocess.Popen([sys.executable, "-m", "densitylab", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _train_args(tmp_path, model, out, epochs):
    config = tmp_path / f"{model}.yaml"
    config.write_text(RunConfig(
        model=model, model_config=PIXELCNN if model == "pixelcnn" else REALNVP, data="digits",
        epochs=epochs, threads=1, checkpoint_every=3, eval_every=1000, log_every=1,
    ).to_yaml())
    return ["train", "--config", str(config), "--out", str(out), "--no-progress"]


@pytest.mark.parametrize("model", ["pixelcnn", "realnvp"])
def test_resume_after_kill_9_matches_uninterrupted_run(tmp_path, model):
    epochs = 3
    reference = _run_cli(_train_args(tmp_path, model, tmp_path / "ref", epochs))
    killed = _run_cli(_train_args(tmp_path, model, tmp_path / "killed", epochs))
    checkpoint = tmp_path / "killed" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if checkpoint.exists():
            try:
                if read_checkpoint(checkpoint)[1]["state"]["step"] >= 6:
                    break
            except DensitylabError:
                pass
        time.sleep(0.005)
    time.sleep(random.Random(model).uniform(0, 0.05))  # any moment, possibly mid-write
    assert killed.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    killed_at = read_checkpoint(checkpoint)[1]["state"]["step"]
    assert killed_at < 3 * (1500 // 64)
    assert not (tmp_path / "killed" / "model.safetensors").exists()

    resumed = _run_cli(["train", "--resume", str(tmp_path / "killed"), "--no-progress"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err.decode()

    final_ref = load_file(str(tmp_path / "ref" / "model.safetensors"))
    final_resumed = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert final_ref.keys() == final_resumed.keys()
    for key in final_ref:
        assert torch.equal(final_ref[key], final_resumed[key]), key
    ref_results = json.loads((tmp_path / "ref" / "results.json").read_text())
    res_results = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert ref_results["test_bits_per_dim"] == res_results["test_bits_per_dim"]
    records = [json.loads(line) for line in
               (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    resumes = [r["step"] for r in records if r.get("event") == "resume"]
    assert resumes == [killed_at] and killed_at > 0  # it continued, it did not start over
    steps = [r["step"] for r in records if "train_bpd" in r]
    assert steps == list(range(1, 3 * (1500 // 64) + 1))  # every step logged exactly once


def test_non_finite_losses_are_skipped_then_recovered(tmp_path, capsys):
    trainer = Trainer(_config(epochs=2), tmp_path / "run", progress=False)
    original = trainer.model.log_prob
    calls = {"n": 0}

    def flaky(x, cond=None, generator=None):
        calls["n"] += 1
        value = original(x, cond, generator)
        if 8 <= calls["n"] < 8 + trainer.config.max_bad_steps:
            return value * float("nan")
        return value

    trainer.model.log_prob = flaky
    trainer.train_loop()
    assert trainer.state.skipped_steps == trainer.config.max_bad_steps
    assert trainer.state.restores == 1 and trainer.state.lr_scale == 0.5
    assert trainer.state.step == trainer.total_steps  # restored to step 5, then ran to the end
    assert "restored the checkpoint of step 5" in capsys.readouterr().err
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_divergence_before_first_checkpoint_is_a_clear_error(tmp_path):
    trainer = Trainer(_config(), tmp_path / "run", progress=False)
    trainer.model.log_prob = lambda x, cond=None, generator=None: torch.full(
        (x.shape[0],), float("nan"), requires_grad=True)
    with pytest.raises(DensitylabError, match="lower --lr"):
        trainer.train_loop()
