import math

import pytest
import torch

from densitylab.evaluate import bits_per_dim
from densitylab.experiments import leaderboard as lb
from densitylab.models.registry import available_models
from densitylab.train.checkpoint import model_from_checkpoint


def test_every_registered_image_model_is_on_the_board_autoregressive_first():
    names = lb.image_models()
    registry = available_models()
    assert sorted(names) == sorted(n for n, i in registry.items() if "image" in i.data_kinds)
    expected = {"pixelcnn", "gated_pixelcnn", "wavenet", "rnn", "made", "realnvp", "glow", "nice", "maf"}
    assert expected <= set(names)
    assert "cdf1d" not in names and "arflow" not in names  # vectors only
    families = [registry[n].family for n in names]
    assert families == sorted(families, key=lambda f: f != "autoregressive")
    assert set(lb.TINY_OPTIONS) == set(names), "tiny needs small options for every image model"


def test_only_the_cpu_budget_leaves_models_out_and_says_why():
    assert lb.left_out("tiny", (1, 8, 8), 17) == {} and lb.left_out("full", (1, 28, 28), 256) == {}
    skipped = lb.left_out("small", (1, 28, 28), 256)
    assert set(skipped) == {"ffjord"}  # IAF's cached density makes it fast enough
    assert skipped["ffjord"][0] > 0 and "ODE" in skipped["ffjord"][1]


def test_ranking_puts_the_lowest_bits_per_dim_first_and_failures_last():
    rows = [{"model": m, "family": "flow", "bits_per_dim": b, "bound": lb.FLOW_BOUND, "parameters": 1,
             "steps": 2, "images_per_s": 3.0, "sample_seconds": s, "options": {}, "error": e,
             "sample_temperature": None if e else 1.0, "sample_note": None}
            for m, b, s, e in [("a", 3.5, 0.1, None), ("b", math.nan, math.nan, "training failed: X"),
                               ("c", 2.5, math.nan, "sampling failed: Y"), ("d", 3.0, 0.2, None)]]
    assert [r["model"] for r in lb.ranked(rows)] == ["c", "d", "a", "b"]
    table = lb.table_rows(rows)
    assert [row[0] for row in table] == [1, 2, 3, None]
    assert [row[3] for row in table] == [2.5, 3.0, 3.5, None]
    assert table[0][9] is None and table[0][-1] == "sampling failed: Y"
    assert all(len(row) == len(lb.COLUMNS) for row in table)


def test_a_run_scores_the_trained_model_that_its_checkpoint_holds(tmp_path):
    row = lb.measure(tmp_path / "run", "pixelcnn", "digits", 3, seed=0,
                     options=lb.TINY_OPTIONS["pixelcnn"], n_test=50, threads=1)
    assert row["error"] is None
    assert row["bound"] == "exact" and row["levels"] == 17 and row["test_images"] == 50
    assert row["steps"] >= 1 and row["images_per_s"] > 0 and row["sample_seconds"] > 0
    assert 0 < row["bits_per_dim"] < math.log2(17)
    assert row["samples"].shape == (lb.SAMPLES, 1, 8, 8)
    assert (tmp_path / "run" / "samples.png").is_file()
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()
    model, _ = model_from_checkpoint(tmp_path / "run" / "model.safetensors")
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    from densitylab.data import load_dataset

    test = load_dataset("digits").test[:50]
    assert bits_per_dim(model, test) == pytest.approx(row["bits_per_dim"], rel=1e-6)


def test_binarized_flow_run_reports_the_dequantization_bound(tmp_path):
    row = lb.measure(tmp_path / "run", "nice", "digits", 2, options=lb.TINY_OPTIONS["nice"], n_bits=1,
                     n_test=20, threads=1)
    assert row["error"] is None and row["bound"] == lb.FLOW_BOUND and row["levels"] == 2
    assert set(row["samples"].unique().tolist()) <= {0, 1}


def test_a_failing_model_is_recorded_not_raised(tmp_path, monkeypatch):
    row = lb.measure(tmp_path / "bad", "made", "digits", 2, options={"no_such_option": 1}, threads=1)
    assert row["error"].startswith("training failed: DensitylabError") and "no_such_option" in row["error"]
    assert math.isnan(row["bits_per_dim"]) and row["samples"] is None

    def broken_draw(*args, **kwargs):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(lb, "draw", broken_draw)
    row = lb.measure(tmp_path / "ok", "made", "digits", 2, options=lb.TINY_OPTIONS["made"], n_test=20,
                     threads=1)
    assert row["error"] == "sampling failed: RuntimeError: sampler exploded"
    assert math.isfinite(row["bits_per_dim"]), "a failed draw keeps the score"


def test_a_flow_that_overflows_at_temperature_one_is_sampled_at_glows_temperature(tmp_path, monkeypatch):
    from densitylab.errors import DensitylabError

    temperatures = []

    def draw(path, device, seed, n=lb.SAMPLES, temperature=1.0):
        temperatures.append(temperature)
        if temperature == 1.0:
            raise DensitylabError(f"4 of {n} samples came out non-finite (the flow's inverse overflowed)")
        return torch.zeros(n, 1, 8, 8, dtype=torch.long), 0.25

    monkeypatch.setattr(lb, "draw", draw)
    row = lb.measure(tmp_path / "run", "nice", "digits", 2, options=lb.TINY_OPTIONS["nice"], n_test=20,
                     threads=1)
    assert temperatures == [1.0, lb.FALLBACK_TEMPERATURE]
    assert row["error"] is None and row["sample_temperature"] == 0.7
    assert row["sample_note"] == "at T = 1, 4 of 16 draws overflowed"
    assert lb.table_rows([row])[0][10] == 0.7

    def other_failure(*args, **kwargs):
        raise DensitylabError("something else")

    monkeypatch.setattr(lb, "draw", other_failure)
    row = lb.measure(tmp_path / "run2", "nice", "digits", 2, options=lb.TINY_OPTIONS["nice"], n_test=20,
                     threads=1)
    assert row["error"] == "sampling failed: DensitylabError: something else"


def fake_measure(scores, failing=()):
    def measure(run_dir, model, data, steps, seed=0, options=None, n_bits=None, n_test=None,
                threads=None):
        if threads:  # as the Trainer does: process-wide
            torch.set_num_threads(threads)
        levels = 2 if n_bits == 1 else 17
        family = available_models()[model].family
        bpd = scores[model] / (4 if n_bits == 1 else 1)
        return {"model": model, "family": family, "options": dict(options or {}), "bits_per_dim": bpd,
                "bound": "exact" if family == "autoregressive" else lb.FLOW_BOUND, "parameters": 10,
                "steps": 5, "images_per_s": 100.0 + bpd, "sample_seconds": 0.5, "levels": levels,
                "samples": torch.randint(0, levels, (lb.SAMPLES, 1, 8, 8)), "test_images": 297,
                "error": "sampling failed: boom" if model in failing else None,
                "sample_temperature": 1.0, "sample_note": None}

    return measure


def test_verdict_names_the_best_model_of_each_table(tmp_path, monkeypatch):
    scores = {name: 3.0 + 0.1 * i for i, name in enumerate(lb.image_models())}
    scores["wavenet"], scores["realnvp"] = 2.5, 2.4  # a flow wins the native table, wavenet the binary one
    monkeypatch.setattr(lb, "measure", fake_measure(scores))
    record = lb.run_leaderboard(tmp_path, "tiny", 0)
    assert record["outcome"] == "measurement"
    assert "the best mean on digits, 17 levels is realnvp with 2.400 bits/dim (a dequantization " \
        "bound" in record["verdict"]
    assert "on digits, binarized wavenet with 0.625 bits/dim (exact" in record["verdict"]
    assert record["seeds"] == [0, 1] and set(record["steps"].values()) == {3}
    native, binary = record["tables"]
    assert [row[1] for row in native["rows"]][:2] == ["realnvp", "wavenet"]
    assert len(native["rows"]) == len(lb.image_models())
    assert {row[2] for row in binary["rows"]} == {"autoregressive"}
    for name in ("samples_native.png", "samples_binarized.png", "tradeoff.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_any_failure_is_counted_and_named(tmp_path, monkeypatch):
    scores = {name: 3.0 for name in lb.image_models()}
    monkeypatch.setattr(lb, "measure", fake_measure(scores, failing={"glow"}))
    torch.set_num_threads(2)
    record = lb.run_leaderboard(tmp_path, "tiny", 0)
    assert torch.get_num_threads() == 2, "the caller's thread count is restored"
    assert record["outcome"] == "measurement"
    total = 2 * (len(lb.image_models()) + sum(available_models()[n].family == "autoregressive"
                                              for n in lb.image_models()))  # two seeds
    assert f"{total - 2} of {total} runs" in record["verdict"]  # glow failed in both seeds
    assert "glow: sampling failed: boom" in record["verdict"]
