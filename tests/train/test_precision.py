"""--precision (autocast of the networks, fp32 likelihoods) and --compile."""

import json
import math
import shutil

import pytest
import torch

from densitylab.cli import main
from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.models.registry import build_model
from densitylab.train.precision import Float32Reductions, TrainingLoss
from densitylab.train.trainer import Trainer, resume_config

PIXELCNN = {"hidden_channels": 8, "n_residual_blocks": 1, "output_hidden": 8}
REALNVP = {"n_scales": 2, "hidden_channels": 8, "couplings_per_mask": 1, "final_couplings": 1}


def _config(**overrides) -> RunConfig:
    values = dict(model="pixelcnn", model_config=PIXELCNN, data="digits", epochs=4.5 / 93,
                  batch_size=16, eval_every=1000, checkpoint_every=2, log_every=1, sample_count=4,
                  threads=1, warmup_steps=2, device="cpu")
    return RunConfig(**(values | overrides))


def test_cpu_autocast_alone_would_sum_in_bf16_and_the_policy_sums_in_fp32():
    ones = torch.ones(257, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float(ones.sum()) == 256.0  # bf16 cannot hold 257: what a log-likelihood would suffer
        with Float32Reductions():
            total = ones.sum()
            log_probs = torch.randn(4, 17, dtype=torch.bfloat16).log_softmax(-1)
    assert total.dtype == torch.float32 and float(total) == 257.0
    assert log_probs.dtype == torch.float32


@pytest.mark.parametrize("name, config", [("pixelcnn", PIXELCNN), ("realnvp", REALNVP)])
def test_bf16_loss_is_float32_and_close_to_the_fp32_loss(name, config):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 17, config)
    with torch.no_grad():  # non-zero last layers: the networks' outputs matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randint(0, 17, (16, 1, 8, 8))
    conv_types = []
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda m, i, out: conv_types.append(out.dtype))
    exact = TrainingLoss(model)(x, None, torch.Generator().manual_seed(1))
    low = TrainingLoss(model, torch.bfloat16)(x, None, torch.Generator().manual_seed(1))
    assert conv_types == [torch.float32, torch.bfloat16]  # the network did run in bf16
    assert low.dtype == torch.float32 and low.shape == (16,)
    assert (low - exact).abs().max() < 0.05  # bits/dim: bf16 rounding of the networks only


def test_bf16_training_on_cpu(tmp_path):
    trainer = Trainer(_config(precision="bf16"), tmp_path / "run", progress=False)
    results = trainer.fit()
    assert results["steps"] == 5
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_bpd"] for r in records if "train_bpd" in r]
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    fp32 = Trainer(_config(), tmp_path / "fp32", progress=False)
    fp32.fit()
    fp32_losses = [json.loads(line).get("train_bpd")
                   for line in (tmp_path / "fp32" / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([v for v in fp32_losses if v is not None], abs=0.05)


def test_fp16_on_cpu_is_refused_in_one_line(tmp_path):
    with pytest.raises(DensitylabError, match="--precision bf16"):
        Trainer(_config(precision="fp16"), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(DensitylabError, match="fp32, bf16 or fp16"):
        _config(precision="fp8").validate()


def test_precision_and_compile_are_recorded_and_survive_resume(tmp_path, capsys):
    args = ["train", "pixelcnn", "--data", "digits", "--epochs", "0.02", "--out", str(tmp_path / "run"),
            "--no-progress", "--threads", "1", "--device", "cpu", "--precision", "bf16",
            "--model-opt", "hidden_channels=8", "--model-opt", "n_residual_blocks=1"]
    assert main(args) == 0
    saved = RunConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.precision == "bf16" and saved.compile is False
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "0.08", "--no-progress"]) == 0
    assert RunConfig.load(tmp_path / "run" / "config.yaml").precision == "bf16"
    # how the run runs may change on resume, like --device
    config = resume_config(tmp_path / "run", {"precision": "fp32", "compile": True})
    assert config.precision == "fp32" and config.compile is True
    assert main(args[:1] + ["--resume", str(tmp_path / "run"), "--batch-size", "8"]) == 2
    assert "not batch_size" in capsys.readouterr().err


def _has_cpp_compiler() -> bool:
    return any(shutil.which(name) for name in ("g++", "clang++", "c++"))


@pytest.mark.skipif(not _has_cpp_compiler(),
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none is installed")
def test_compiled_training_step_matches_the_eager_one(tmp_path):
    """One step of a compiled loss on CPU (about 40 s the first time on 2 cores, a few seconds
    with inductor's cache warm) gives the eager step's loss and parameters."""
    compiled = Trainer(_config(compile=True), tmp_path / "compiled", progress=False)
    eager = Trainer(_config(), tmp_path / "eager", progress=False)
    assert isinstance(compiled.loss_fn, torch._dynamo.eval_frame.OptimizedModule)
    x, labels = compiled.next_batch()
    assert torch.equal(x, eager.next_batch()[0])
    loss = compiled.train_step(x, labels)
    assert loss is not None and math.isfinite(loss)
    assert loss == pytest.approx(eager.train_step(x, labels), abs=1e-5)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name, options", [("pixelcnn", PIXELCNN),
                                           ("gated_pixelcnn", {"hidden_channels": 8, "n_layers": 2})])
def test_log_prob_traces_as_one_graph(name, options):
    """The input check reads pixel values back only outside torch.compile: inside, that read would
    break the graph (and, on a GPU, sync every step). Dynamo's trace alone: no C++ compiler needed."""
    model = build_model(name, (1, 6, 6), 4, options)
    x = torch.randint(0, 4, (2, 1, 6, 6))
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model.log_prob)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    with pytest.raises(DensitylabError, match="pixel values must lie in 0..3"):
        model.log_prob(x + 4)  # eager calls still check the range
