import json
import subprocess
import sys

import numpy as np
import pytest

from densitylab.cli import main

SMALL = ["--model-opt", "hidden_channels=8", "--model-opt", "n_residual_blocks=1",
         "--model-opt", "output_hidden=8"]


def _train(tmp_path, *extra, model="pixelcnn", name="run"):
    args = ["train", model, "--data", "digits", "--epochs", "0.2", "--out", str(tmp_path / name),
            "--no-progress", "--threads", "1", *extra]
    return main(args)


def test_list_names_every_model_and_dataset(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("pixelcnn", "realnvp", "mnist5k", "digits", "shapes", "mnist", "fashion-mnist"):
        assert f"  {name} " in out


def test_train_eval_sample_round_trip(tmp_path, capsys):
    assert _train(tmp_path, *SMALL) == 0
    assert "test bits/dim" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "run"), "--max-images", "50"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "exact" and record["images"] == 50 and record["bits_per_dim"] > 0
    assert main(["eval", str(tmp_path / "run")]) == 0  # the whole test split, as at the end of training
    full = json.loads(capsys.readouterr().out)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert full["bits_per_dim"] == pytest.approx(results["test_bits_per_dim"], abs=1e-9)
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "g.png"),
                 "--temperature", "0.8", "--seed", "1"]) == 0
    first = (tmp_path / "g.png").read_bytes()
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "h.png"),
                 "--temperature", "0.8", "--seed", "1"]) == 0
    assert (tmp_path / "h.png").read_bytes() == first
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "h.png"),
                 "--temperature", "0.8", "--seed", "1"]) == 0  # the same -o again: replaced
    assert (tmp_path / "h.png").read_bytes() == first
    assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / "naive.png"),
                 "--temperature", "0.8", "--seed", "1", "--method", "naive"]) == 0
    assert (tmp_path / "naive.png").read_bytes() == first  # cached (the default) = naive
    for method in ("naive", "cached"):
        assert main(["sample", str(tmp_path / "run"), "-n", "4", "-o", str(tmp_path / f"{method}64.png"),
                     "--seed", "1", "--method", method, "--float64", "--no-progress"]) == 0
    assert (tmp_path / "naive64.png").read_bytes() == (tmp_path / "cached64.png").read_bytes()


def test_sample_method_is_for_autoregressive_models(tmp_path, capsys):
    assert _train(tmp_path, "--model-opt", "hidden_channels=4", model="realnvp") == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "2", "--method", "naive"]) == 2
    assert "--method applies to autoregressive models" in capsys.readouterr().err


def test_flow_eval_with_importance_weighting(tmp_path, capsys):
    assert _train(tmp_path, "--model-opt", "hidden_channels=8", model="realnvp") == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--iw", "4", "--max-images", "40"]) == 0
    iw = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tmp_path / "run"), "--max-images", "40"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert "importance-weighted" in iw["kind"] and single["kind"] == "dequantization bound"
    assert 0 < iw["bits_per_dim"] < 8 and 0 < single["bits_per_dim"] < 8


def test_config_file_with_flag_override(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("model: pixelcnn\nmodel_config: {hidden_channels: 8, n_residual_blocks: 1}\n"
                      "data: digits\nepochs: 5\nbatch_size: 32\nlr: 1e-3\n")
    assert main(["train", "--config", str(config), "--epochs", "0.1", "--out",
                 str(tmp_path / "run"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["steps"] == 5  # 0.1 epoch of 1,500 images at batch 32
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "batch_size: 32" in saved and "epochs: 0.1" in saved


def test_user_npy_dataset_with_requantization(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (80, 6, 6), dtype=np.uint8)
    np.save(tmp_path / "mine.npy", images)
    assert main(["train", "pixelcnn", "--data", str(tmp_path / "mine.npy"), "--n-bits", "2",
                 "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run"),
                 "--no-progress", *SMALL]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["levels"] == 4 and results["shape"] == [1, 6, 6] and results["test_images"] == 8


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "pixelcnnn", "--data", "digits", "--epochs", "1", "--out", "{tmp}/r"],
         "unknown model"),
        (["train", "pixelcnn", "--data", "cifar-11", "--epochs", "1", "--out", "{tmp}/r"],
         "unknown dataset"),
        (["train", "pixelcnn", "--data", "digits", "--out", "{tmp}/r"], "--epochs"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1"], "--out"),
        (["train", "pixelcnn", "--data", "digits", "--time-budget", "soon", "--out", "{tmp}/r"],
         "duration"),
        (["train", "pixelcnn", "--data", "{tmp}/missing.npz", "--epochs", "1", "--out",
          "{tmp}/r"], "does not exist"),
        (["train", "pixelcnn", "--data", "digits", "--n-bits", "9", "--epochs", "1", "--out",
          "{tmp}/r"], "n-bits"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--model-opt", "depth=3",
          "--out", "{tmp}/r"], "no option"),
        (["train", "--resume", "{tmp}/nothing"], "no run to resume"),
        (["eval", "{tmp}/nothing"], "does not exist"),
        (["sample", "{tmp}/nothing", "-n", "4"], "does not exist"),
        (["train", "--config", "{tmp}/none.yaml", "--out", "{tmp}/r"], "not found"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--model-opt",
          "first_kernel=4", "--out", "{tmp}/r"], "odd"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--model-opt",
          "hidden_channels=wide", "--out", "{tmp}/r"], "hidden_channels"),
        (["train", "realnvp", "--data", "digits", "--epochs", "1", "--model-opt",
          "alpha=0.7", "--out", "{tmp}/r"], "alpha"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--threads", "0",
          "--out", "{tmp}/r"], "--threads"),
        (["train", "pixelcnn", "--data", "digits", "--epochs", "1", "--batch-size", "5000",
          "--out", "{tmp}/r"], "--batch-size"),
        (["eval", "{tmp}", "--batch-size", "0"], "--batch-size"),
        (["train", "pixelcnn", "--epochs", "x"], "invalid float"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("densitylab: error:") and message in err and "\n" not in err
    assert not (tmp_path / "r").exists()  # a refused run leaves nothing behind


def test_existing_run_needs_resume_or_force(tmp_path, capsys):
    assert _train(tmp_path, *SMALL) == 0
    before = (tmp_path / "run" / "model.safetensors").read_bytes()
    assert _train(tmp_path, *SMALL) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == before
    assert _train(tmp_path, *SMALL, "--force") == 0


def test_resume_extends_a_finished_run(tmp_path, capsys):
    assert _train(tmp_path, *SMALL) == 0
    steps = json.loads((tmp_path / "run" / "results.json").read_text())["steps"]
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "0.4",
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] > steps
    assert main(["train", "--resume", str(tmp_path / "run"), "--lr", "1"]) == 2


def test_corrupt_checkpoint_in_run_dir(tmp_path, capsys):
    assert _train(tmp_path, *SMALL) == 0
    model = tmp_path / "run" / "model.safetensors"
    model.write_bytes(model.read_bytes()[:50])
    assert main(["sample", str(tmp_path / "run"), "-n", "2"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_module_entry_point_exit_codes():
    ok = subprocess.run([sys.executable, "-m", "densitylab", "list"], capture_output=True)
    assert ok.returncode == 0 and b"realnvp" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "densitylab", "eval", "/nonexistent/run"],
                         capture_output=True)
    assert bad.returncode == 2 and bad.stderr.count(b"\n") == 1


def test_bench_prints_one_json_record(tmp_path, capsys):
    assert main(["bench", "pixelcnn", "--data", "digits", "--minutes", "0.02", "--threads", "1",
                 "--test-images", "50", "--sample-count", "2", "--model-opt", "hidden_channels=8",
                 "--model-opt", "n_residual_blocks=1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["model"] == "pixelcnn" and record["test_images"] == 50
    assert record["steps"] > 0 and 0 < record["test_bits_per_dim"] < 5
    assert record["lr"] == 1.2e-2  # the model's default learning rate


def test_demo_trains_both_models_and_says_where_the_results_are(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--time-budget", "2s"]) == 0
    out = capsys.readouterr().out
    for model in ("pixelcnn", "realnvp"):
        assert (tmp_path / "demo" / model / "samples.png").is_file()
        result = json.loads((tmp_path / "demo" / model / "results.json").read_text())
        assert result["data"] == "mnist5k" and result["levels"] == 256
        assert f"{model}" in out and str(tmp_path / "demo" / model / "samples.png") in out


TINY_OPTIONS = {
    "gated_pixelcnn": ["hidden_channels=6", "skip_channels=6", "output_hidden=6", "n_layers=2"],
    "wavenet": ["residual_channels=4", "skip_channels=4", "output_hidden=4", "layers_per_block=3",
                "coords=true"],
    "rnn": ["hidden_size=8"],
    "made": ["hidden_sizes=[16]"],
    "pixelcnn": ["hidden_channels=6", "n_residual_blocks=1", "output_hidden=6",
                 "head=logistic-mixture"],
}


@pytest.mark.parametrize("model", TINY_OPTIONS)
def test_every_autoregressive_model_trains_conditionally_and_samples_a_class(tmp_path, capsys, model):
    options = [arg for opt in TINY_OPTIONS[model] for arg in ("--model-opt", opt)]
    assert _train(tmp_path, *options, "--conditional", model=model) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["conditional"] and results["bound"] == "exact" and results["test_bits_per_dim"] > 0
    assert main(["eval", str(tmp_path / "run"), "--max-images", "30"]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "3", "--label", "7", "-o",
                 str(tmp_path / "seven.png")]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "20", "-o", str(tmp_path / "rows.png")]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 samples" in out and "wrote 20 samples" in out  # 10 classes x 2
    assert main(["sample", str(tmp_path / "run"), "--label", "10"]) == 2
    assert "0..9" in capsys.readouterr().err


def test_colour_data_trains_with_channel_masks(tmp_path, capsys):
    args = ["train", "gated_pixelcnn", "--data", "colored-mnist", "--n-bits", "2", "--epochs", "0.02",
            "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1", "--batch-size", "16",
            "--sample-count", "2"]
    options = [arg for opt in TINY_OPTIONS["gated_pixelcnn"] for arg in ("--model-opt", opt)]
    assert main(args + options) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["shape"] == [3, 28, 28] and results["levels"] == 4
    assert 0 < results["test_bits_per_dim"] < 2.5


def test_head_and_coords_flags_set_model_options(tmp_path, capsys):
    assert _train(tmp_path, "--coords", "--model-opt", "layers_per_block=2", model="wavenet") == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "coords: true" in config
    assert _train(tmp_path, *SMALL, "--head", "logistic-mixture", name="mix") == 0
    assert "head: logistic-mixture" in (tmp_path / "mix" / "config.yaml").read_text()
    assert _train(tmp_path, "--coords", model="made", name="bad") == 2
    assert "no option coords" in capsys.readouterr().err


def test_conditional_refusals(tmp_path, capsys):
    assert main(["train", "realnvp", "--data", "digits", "--epochs", "0.1", "--conditional",
                 "--out", str(tmp_path / "r")]) == 2
    assert "no class-conditional version" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((20, 4, 4), dtype=np.uint8))
    assert main(["train", "pixelcnn", "--data", str(tmp_path / "x.npy"), "--epochs", "0.1",
                 "--conditional", "--out", str(tmp_path / "r")]) == 2
    assert "needs labels" in capsys.readouterr().err
    assert _train(tmp_path, *SMALL) == 0
    assert main(["sample", str(tmp_path / "run"), "--label", "1"]) == 2
    assert "--conditional" in capsys.readouterr().err


def test_flow_on_a_2d_toy_reports_nats_and_plots_samples(tmp_path, capsys):
    args = ["train", "nice", "--data", "moons", "--epochs", "0.05", "--batch-size", "256",
            "--model-opt", "hidden_features=16", "--model-opt", "hidden_layers=1",
            "--out", str(tmp_path / "toy"), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    assert "test nats/dim" in capsys.readouterr().out
    results = json.loads((tmp_path / "toy" / "results.json").read_text())
    assert results["unit"] == "nats/dim" and np.isfinite(results["test_nats_per_dim"])
    assert (tmp_path / "toy" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["eval", str(tmp_path / "toy")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["nats_per_dim"] == pytest.approx(results["test_nats_per_dim"], abs=1e-6)
    assert main(["sample", str(tmp_path / "toy"), "-n", "500", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_image_model_on_toy_data_is_refused_in_one_line(tmp_path, capsys):
    args = ["train", "pixelcnn", "--data", "moons", "--epochs", "0.05", "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "does not take continuous vectors" in err and len(err.splitlines()) == 1


def test_variational_dequantization_from_the_command_line(tmp_path, capsys):
    small = ["--model-opt", "n_scales=1", "--model-opt", "final_couplings=2",
             "--model-opt", "hidden_channels=8"]
    assert _train(tmp_path, *small, "--dequantization", "variational", model="realnvp") == 0
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "dequantization: variational" in config
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--iw", "4", "--max-images", "40"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "importance-weighted" in record["kind"] and np.isfinite(record["bits_per_dim"])
