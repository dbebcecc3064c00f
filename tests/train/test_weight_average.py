"""The moving average of the weights: its recurrence, that evaluation sees it and training does
not, that the saved model holds it, and that a resumed run continues it exactly."""

import pytest
import torch
from torch import nn

from densitylab.config import RunConfig
from densitylab.errors import DensitylabError
from densitylab.train.checkpoint import read_checkpoint
from densitylab.train.trainer import Trainer
from densitylab.train.weight_average import PREFIX, WeightAverage

PIXELCNN = {"hidden_channels": 8, "n_residual_blocks": 1, "output_hidden": 8}


def _config(**overrides):
    values = dict(model="pixelcnn", model_config=PIXELCNN, data="digits", epochs=0.3, batch_size=64,
                  eval_every=10**6, checkpoint_every=3, log_every=5, sample_count=0, threads=1,
                  warmup_steps=2, ema=0.9)
    return RunConfig(**(values | overrides))


def test_average_follows_its_recurrence_exactly():
    layer = nn.Linear(3, 2).double()
    average = WeightAverage(layer, 0.9)
    expected = [p.detach().clone() for p in layer.parameters()]
    for step in range(1, 40):
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(torch.randn_like(p))
        average.update(layer, step)
        d = min(0.9, (1 + step) / (10 + step))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, layer.parameters(), strict=True)]
    for got, want in zip(average.values, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert average.decay_at(1) == pytest.approx(2 / 11) and average.decay_at(10**6) == 0.9


def test_swapped_in_shows_the_average_and_gives_the_weights_back():
    layer = nn.Linear(3, 2)
    average = WeightAverage(layer, 0.5)
    with torch.no_grad():
        layer.weight.add_(1.0)
    live = layer.weight.detach().clone()
    with average.swapped_in(layer):
        torch.testing.assert_close(layer.weight, live - 1.0)
    torch.testing.assert_close(layer.weight, live)


@pytest.mark.parametrize("decay", [1.0, -0.1, float("nan")])
def test_bad_decay_is_refused(decay):
    with pytest.raises(DensitylabError, match="--ema"):
        RunConfig(epochs=1, ema=decay).validate()


def test_saved_model_holds_the_average_and_the_checkpoint_both(tmp_path):
    trainer = Trainer(_config(), tmp_path / "run", progress=False)
    trainer.fit()
    model_tensors, _ = read_checkpoint(tmp_path / "run" / "model.safetensors")
    ckpt_tensors, _ = read_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    for name, value in trainer.average.state_tensors().items():
        plain = name.removeprefix(PREFIX)
        torch.testing.assert_close(model_tensors["model." + plain], value)  # the saved model
        torch.testing.assert_close(ckpt_tensors[name], value)  # the checkpoint's average
    # the checkpoint's own weights are the last ones trained, not the average
    assert any(not torch.equal(ckpt_tensors["model." + n.removeprefix(PREFIX)], v)
               for n, v in trainer.average.state_tensors().items())


def test_evaluation_scores_the_average(tmp_path):
    trainer = Trainer(_config(epochs=0.2), tmp_path / "run", progress=False)
    trainer.train_loop()
    with_average = trainer.evaluate(200)
    average, trainer.average = trainer.average, None
    last_weights = trainer.evaluate(200)
    trainer.average = average
    trainer.adopt_average()
    trainer.average = None
    assert trainer.evaluate(200) == pytest.approx(with_average, abs=1e-9)
    assert with_average != pytest.approx(last_weights, abs=1e-6)
    trainer.close()


def test_resumed_run_continues_the_average_bit_identically(tmp_path):
    whole = Trainer(_config(), tmp_path / "whole", progress=False)
    whole.fit()
    stopped = Trainer(_config(), tmp_path / "split", progress=False)
    stopped.done = lambda: stopped.state.step >= 6  # as if killed after the step-6 checkpoint
    stopped.train_loop()
    stopped.close()
    resumed = Trainer(_config(), tmp_path / "split", resume=True, progress=False)
    resumed.fit()
    assert resumed.state.step == whole.state.step > 6
    for a, b in zip(whole.average.values, resumed.average.values, strict=True):
        assert torch.equal(a, b)
