"""The learning-rate schedule (warm-up at most 5% of a run) and the progress display."""

import io
import math

import pytest

from densitylab.config import RunConfig
from densitylab.train import trainer as trainer_module
from densitylab.train.progress import Progress
from densitylab.train.trainer import WARMUP_FRACTION, Trainer

TINY = {"hidden_channels": 4, "n_residual_blocks": 1, "output_hidden": 4}


def _trainer(tmp_path, **overrides):
    values = dict(model="pixelcnn", model_config=TINY, data="digits", epochs=4, batch_size=64,
                  threads=1, warmup_steps=1000, lr=1e-2)
    return Trainer(RunConfig(**(values | overrides)), tmp_path / "run", progress=False)


def test_warmup_never_exceeds_five_percent_of_the_steps(tmp_path):
    trainer = _trainer(tmp_path)
    total = trainer.total_steps
    peak_step = math.ceil(WARMUP_FRACTION * total)
    trainer.state.step = peak_step
    assert trainer.learning_rate() == pytest.approx(1e-2, rel=1e-3)  # warm-up over, decay just begun
    trainer.state.step = peak_step // 2
    assert trainer.learning_rate() < 0.6e-2
    rates = []
    for step in range(total):
        trainer.state.step = step
        rates.append(trainer.learning_rate())
    assert max(rates) == pytest.approx(1e-2, rel=1e-3) and max(rates) <= 1e-2
    assert rates[-1] < 0.05e-2  # the cosine decays to 2% of the peak


def test_short_warmup_in_steps_is_kept(tmp_path):
    trainer = _trainer(tmp_path, warmup_steps=2)
    trainer.state.step = 1
    assert trainer.learning_rate() == pytest.approx(1e-2)


def test_time_budget_warmup_ends_at_five_percent_of_the_budget(tmp_path):
    trainer = _trainer(tmp_path, epochs=None, time_budget="10s")
    trainer.state.step, trainer.state.train_seconds = 20, 0.25
    assert trainer.learning_rate() == pytest.approx(0.5e-2)  # half-way through the warm-up
    trainer.state.train_seconds = 0.5
    assert trainer.learning_rate() == pytest.approx(1e-2)  # the peak, at 5% of the budget
    trainer.state.train_seconds = 10.0
    assert trainer.learning_rate() == pytest.approx(0.02e-2)


def test_progress_off_a_terminal_prints_plain_lines():
    stream = io.StringIO()
    progress = Progress(100, None, 0, 0.0, stream=stream, min_seconds=0.0)
    for step in range(1, 101):
        progress.advance(step, step * 0.1)
        if step % 20 == 0:
            progress.report(step, step * 0.1, {"bpd": "2.000"})
    progress.close(100, 10.0)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0] == "step 20/100 (20%), 2 s: bpd 2.000"
    assert lines[-1] == "step 100/100 (100%), 10 s: training done" and len(lines) == 6


def test_progress_lines_are_spaced_in_time():
    stream = io.StringIO()
    progress = Progress(None, 60.0, 0, 0.0, stream=stream, min_seconds=3600.0)
    for step in (20, 40, 60):
        progress.report(step, step / 10, {"bpd": "1.0"})
    assert stream.getvalue() == "step 20, 2 s of 60 s (3%): bpd 1.0\n"


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("total_steps", "budget", "total"), [(50, None, 50), (None, 30.0, 30)])
def test_progress_bar_on_a_terminal_keeps_its_total(total_steps, budget, total):
    progress = Progress(total_steps, budget, 0, 0.0, stream=FakeTerminal())
    assert progress.bar is not None and progress.bar.total == total
    for step in range(1, 41):
        progress.advance(step, step * 0.5)
        progress.report(step, step * 0.5, {"bpd": "1.0"})
        assert progress.bar.total == total
    progress.close(40, 20.0)


def test_disabled_progress_prints_nothing():
    stream = FakeTerminal()
    progress = Progress(10, None, 0, 0.0, enabled=False, stream=stream)
    progress.report(5, 1.0, {"bpd": "1"})
    progress.close(10, 2.0)
    assert progress.bar is None and stream.getvalue() == ""


def test_a_logged_run_writes_readable_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(trainer_module, "LOG_SECONDS", 0.0)
    config = RunConfig(model="pixelcnn", model_config=TINY, data="digits", epochs=1, threads=1,
                       log_every=5, eval_every=10**6, sample_count=2)
    results = Trainer(config, tmp_path / "run").fit()  # progress on, stderr is not a terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert f"step 5/{results['steps']} " in err and "training done" in err
    assert "outside the budget" in err and "evaluation and sampling took" in err
    assert results["finish_seconds"] > 0
