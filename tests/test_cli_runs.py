"""Budgets on the command line (--time-budget none, --resume), eval --iw on exact models, report
of training runs, labelled grids."""

import json

import numpy as np
import yaml
from PIL import Image

from densitylab.cli import main

TINY = ["--model-opt", "hidden_channels=4", "--model-opt", "n_residual_blocks=1",
        "--model-opt", "output_hidden=4"]


def _train(tmp_path, *extra, name="run"):
    return main(["train", "pixelcnn", "--data", "digits", "--out", str(tmp_path / name),
                 "--no-progress", "--threads", "1", "--sample-count", "4", *TINY, *extra])


def _saved(tmp_path, name="run"):
    return yaml.safe_load((tmp_path / name / "config.yaml").read_text())


def test_time_budget_none_clears_the_budget_of_a_config(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1", "--time-budget", "1h", name="first") == 0
    assert _saved(tmp_path, "first")["time_budget"] == "1h"
    assert main(["train", "--config", str(tmp_path / "first" / "config.yaml"), "--time-budget", "none",
                 "--out", str(tmp_path / "second"), "--no-progress"]) == 0
    assert _saved(tmp_path, "second")["time_budget"] is None
    assert _saved(tmp_path, "second")["epochs"] == 0.1


def test_a_config_keeps_its_budget_without_the_flag(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"model": "pixelcnn", "data": "digits", "time_budget": "1s",
                                      "model_config": {"hidden_channels": 4, "n_residual_blocks": 1,
                                                       "output_hidden": 4}, "sample_count": 0,
                                      "threads": 1}))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert _saved(tmp_path)["time_budget"] == "1s" and _saved(tmp_path)["epochs"] is None


def test_time_budget_zero_points_to_none(tmp_path, capsys):
    assert _train(tmp_path, "--time-budget", "0") == 2
    assert "--time-budget none" in capsys.readouterr().err


def test_resume_says_when_the_budget_changes_and_when_it_is_spent(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1") == 0
    steps = json.loads((tmp_path / "run" / "results.json").read_text())["steps"]
    capsys.readouterr()
    run = str(tmp_path / "run")
    assert main(["train", "--resume", run, "--no-progress"]) == 0  # nothing left to train
    err = capsys.readouterr().err
    assert "is already spent" in err and "nothing to train" in err and "--epochs" in err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == steps
    assert main(["train", "--resume", run, "--epochs", "0.2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--epochs changes from 0.1 to 0.2" in err and "already spent" not in err
    assert _saved(tmp_path)["epochs"] == 0.2
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] > steps
    assert main(["train", "--resume", run, "--time-budget", "1h", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "--time-budget changes from none to 1h" in err and "already spent" in err
    assert _saved(tmp_path)["time_budget"] == "1h"


def test_resume_of_a_run_killed_after_its_budget_only_finishes(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1") == 0
    (tmp_path / "run" / "results.json").unlink()  # as if killed while evaluating
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "already spent" in err
    assert (tmp_path / "run" / "results.json").is_file()


def test_eval_iw_on_an_exact_model_says_it_is_exact(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1") == 0
    out = capsys.readouterr().out  # the time after the budget is reported even without progress
    assert "s of training, then" in out and "s evaluating and sampling" in out
    assert main(["eval", str(tmp_path / "run"), "--iw", "4", "--max-images", "10"]) == 0
    captured = capsys.readouterr()
    assert "--iw 4 has nothing to do" in captured.err and "exact" in captured.err
    assert json.loads(captured.out)["kind"] == "exact"


def test_report_takes_training_runs(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1", name="a") == 0
    assert _train(tmp_path, "--epochs", "0.1", name="b") == 0
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "Training runs" in page and page.count("<td>pixelcnn</td>") == 2
    assert f"{results['test_bits_per_dim']:.3f} bits/dim" in page
    assert "data:image/png;base64," in page


def test_conditional_grids_are_labelled(tmp_path, capsys):
    assert _train(tmp_path, "--epochs", "0.1", "--conditional") == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "20", "-o", str(tmp_path / "g.png")]) == 0
    labelled = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    assert main(["train", "pixelcnn", "--data", "digits", "--out", str(tmp_path / "plain"), "--epochs",
                 "0.1", "--no-progress", "--threads", "1", *TINY]) == 0
    assert main(["sample", str(tmp_path / "plain"), "-n", "20", "--label", "3", "-o",
                 str(tmp_path / "p.png")]) == 2  # --label needs a conditional model
    assert labelled.shape[0] > labelled.shape[1]  # 10 rows (one per class) of 2 samples
    margin = labelled[:, :20]
    assert (margin == 255).all(axis=-1).mean() > 0.5 and (margin < 100).all(axis=-1).any()  # text
