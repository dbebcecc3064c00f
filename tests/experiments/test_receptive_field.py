import json
import math

from densitylab.cli import main
from densitylab.experiments.receptive_field import blind_spot, measure


def test_pixelcnn_has_a_blind_spot_that_grows_and_gated_has_none():
    rows = {(r["model"], r["layers"]): r for r in measure(layers=(2, 4), size=11)["rows"]}
    assert 0 < rows[("pixelcnn", 2)]["blind_spot"] < rows[("pixelcnn", 4)]["blind_spot"]
    assert rows[("gated_pixelcnn", 2)]["blind_spot"] == rows[("gated_pixelcnn", 4)]["blind_spot"] == 0
    assert not any(r["sees_a_later_pixel"] for r in rows.values())


def test_blind_spot_is_the_hole_inside_the_seen_area():
    import torch

    seen = torch.zeros(5, 5, dtype=torch.bool)
    seen[1, 0:3] = True
    seen[2, 0:2] = True  # centre (2, 2): row 1 seen up to column 2, column 3 and 4 never
    seen[1, 4] = True
    assert blind_spot(seen).nonzero().tolist() == [[1, 3]]


def test_experiment_command_writes_results_and_figure(tmp_path, capsys):
    assert main(["experiment", "receptive-field", "--budget", "tiny", "--out", str(tmp_path / "rf")]) == 0
    assert "receptive-field: inconclusive (budget too small)" in capsys.readouterr().out
    results = json.loads((tmp_path / "rf" / "results.json").read_text())
    assert results["outcome"] == "inconclusive (budget too small)" and results["reproduced"] is None
    assert "misses 10 earlier pixels" in results["verdict"]  # the exact part is measured anyway
    dependency, scores, gain = results["tables"]
    assert len(dependency["rows"]) == 6
    assert [row[0] for row in scores["rows"]] == ["gated_pixelcnn", "pixelcnn"]
    assert all(0 < row[1] < math.log2(17) for row in scores["rows"])  # below the uniform model
    assert results["steps"] == {"gated_pixelcnn": 4, "pixelcnn": 4} and results["seeds"] == [0, 1]
    assert (tmp_path / "rf" / "receptive_field.png").read_bytes()[:4] == b"\x89PNG"
