"""Every registered experiment, end to end at the tiny budget: a complete record and its figures."""

import json

import pytest

from densitylab.experiments import EXPERIMENTS, experiment_names, run_experiment
from densitylab.experiments.base import check_record


def test_every_experiment_is_in_the_report_order():
    assert sorted(experiment_names()) == sorted(EXPERIMENTS)


@pytest.mark.parametrize("name", experiment_names())
def test_experiment_runs_at_the_tiny_budget(name, tmp_path):
    record = run_experiment(name, tmp_path, "tiny", seed=0)
    assert json.loads((tmp_path / "results.json").read_text()) == record
    check_record(record, tmp_path)
    assert record["experiment"] == name and record["budget"] == "tiny"
    assert record["tables"] and record["figures"]
    assert record["outcome"] != "reproduced", "the tiny budget is a smoke test"
    assert record["rule"] and record["seeds"] == [0, 1]
    assert all(any(isinstance(v, int | float) and not isinstance(v, bool) for row in t["rows"] for v in row)
               for t in record["tables"]), "every table holds numbers"
    for fig in record["figures"]:
        assert (tmp_path / fig["file"]).read_bytes()[:4] == b"\x89PNG"


def test_rnn_coords_at_the_tiny_budget_says_inconclusive(tmp_path, capsys):
    from densitylab.cli import main

    assert main(["experiment", "rnn-coords", "--budget", "tiny", "--seed", "0", "--out",
                 str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("rnn-coords: inconclusive")
    record = json.loads((tmp_path / "results.json").read_text())
    assert len(set(record["steps"].values())) == 1, "every arm trains the same number of steps"


def test_list_shows_every_experiment_with_its_claim(capsys):
    from densitylab.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out.split("experiments:")[1]
    for name in ("variational-dequantization", "logistic-vs-softmax", "colour-masks",
                 "additive-vs-affine", "glow-permutation", "ffjord-trace", *EXPERIMENTS):
        assert f"  {name} " in out and EXPERIMENTS[name].claim in out
