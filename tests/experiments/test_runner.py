"""``experiment all``: timed experiments alone first, the others on worker processes, one record."""

import json

from densitylab.experiments.runner import RECORD_FILE, run_all


def test_run_all_runs_timed_first_then_the_rest_in_workers_and_records_it(tmp_path):
    seen = []
    names = ["flow-1d", "dequantization", "additive-vs-affine"]
    record = run_all(names, {"dequantization"}, tmp_path, "tiny", 0, jobs=2, report=seen.append)
    assert seen[0]["name"] == "dequantization"  # the timed one ran before any other
    assert {r["name"] for r in seen} == set(names)
    assert all("error" not in r and r["seconds"] > 0 for r in seen)
    for name in names:  # each experiment wrote its own record, as a single run does
        assert json.loads((tmp_path / name / "results.json").read_text())["experiment"] == name
    saved = json.loads((tmp_path / RECORD_FILE).read_text())
    assert saved == record and list(saved["experiments"]) == names
    assert saved["jobs"] == 2 and saved["timed_alone"] == ["dequantization"] and saved["wall_s"] > 0


def test_a_failing_experiment_is_reported_and_the_others_still_run(tmp_path):
    (tmp_path / "flow-1d").write_text("a file where the experiment's directory should be")
    seen = []
    record = run_all(["flow-1d", "dequantization"], set(), tmp_path, "tiny", 0, jobs=1,
                     report=seen.append)
    assert "is a file" in record["experiments"]["flow-1d"]["error"]
    assert record["experiments"]["dequantization"]["outcome"]
