"""``channels_last``: the NHWC memory layout changes how convolutions run, not what the model
computes or saves."""

import pytest
import torch

from densitylab.config import RunConfig
from densitylab.models.registry import build_model
from densitylab.train.checkpoint import read_checkpoint
from densitylab.train.trainer import Trainer

SMALL = {
    "pixelcnn": {"hidden_channels": 8, "n_residual_blocks": 1, "output_hidden": 8},
    "gated_pixelcnn": {"hidden_channels": 8, "n_layers": 2},
    "glow": {"n_scales": 2, "steps_per_scale": 2, "hidden_channels": 8},
    "realnvp": {"n_scales": 2, "hidden_channels": 8, "couplings_per_mask": 1, "final_couplings": 1},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_log_prob_is_the_same_in_either_layout(name):
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), 17, SMALL[name]).double()
    x = torch.randint(0, 17, (6, 1, 8, 8))
    model.initialize(x)
    model.eval()
    before = model.log_prob(x, generator=torch.Generator().manual_seed(1))
    model.to(memory_format=torch.channels_last)
    after = model.log_prob(x.contiguous(memory_format=torch.channels_last),
                           generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["pixelcnn", "glow"])
def test_training_resumes_and_saves_in_channels_last(tmp_path, name):
    config = dict(model=name, model_config=SMALL[name], data="digits", epochs=0.2, batch_size=64,
                  eval_every=10**6, checkpoint_every=2, sample_count=0, threads=1, warmup_steps=2)
    whole = Trainer(RunConfig(**config, channels_last=True), tmp_path / "whole", progress=False)
    whole.fit()
    plain = Trainer(RunConfig(**config), tmp_path / "plain", progress=False)
    plain.fit()
    stopped = Trainer(RunConfig(**config, channels_last=True), tmp_path / "split", progress=False)
    stopped.done = lambda: stopped.state.step >= 2
    stopped.train_loop()
    stopped.close()
    resumed = Trainer(RunConfig(**config, channels_last=True), tmp_path / "split", resume=True,
                      progress=False)
    resumed.fit()
    saved, _ = read_checkpoint(tmp_path / "whole" / "model.safetensors")
    again, _ = read_checkpoint(tmp_path / "split" / "model.safetensors")
    reference, _ = read_checkpoint(tmp_path / "plain" / "model.safetensors")
    for key, value in saved.items():
        torch.testing.assert_close(again[key], value, rtol=0, atol=0)  # resumed = uninterrupted
        torch.testing.assert_close(reference[key], value, rtol=1e-3, atol=1e-4)  # layout = plain
