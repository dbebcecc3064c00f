"""``densitylab sample --method`` on MAF: the cached and the naive sequential inverse give the same
grid (float64: the two agree within rounding, far below a grey level)."""

from densitylab.cli import main


def test_maf_samples_the_same_grid_with_both_methods(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "maf", "--data", "digits", "--epochs", "0.1", "--out", str(run), "--no-progress",
                 "--threads", "1", "--model-opt", "n_transforms=2", "--model-opt", "hidden_sizes=[32]"]) == 0
    grids = {}
    for method in ("cached", "naive"):
        output = tmp_path / f"{method}.png"
        assert main(["sample", str(run), "-n", "8", "-o", str(output), "--seed", "2", "--float64",
                     "--method", method]) == 0
        grids[method] = output.read_bytes()
    assert grids["cached"] == grids["naive"]
