import math

import pytest
import torch

from densitylab.experiments.coordinates import crossed, draw, train_with_snapshots


def test_crossed_removes_every_point_reached_and_counts_them():
    pending = [0.0, 0.25, 0.5, 1.0]
    assert crossed(pending, 0.0) == 1 and pending == [0.25, 0.5, 1.0]
    assert crossed(pending, 0.1) == 0
    assert crossed(pending, 0.7) == 2 and pending == [1.0]  # one slow step passed two points
    assert crossed(pending, 1.3) == 1 and pending == []
    assert crossed(pending, 2.0) == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    result = train_with_snapshots(tmp_path_factory.mktemp("rnn"), "rnn", "digits", 12, seed=0,
                                  model_config={"coords": True, "hidden_size": 16}, eval_images=32,
                                  threads=1, samples=9)
    assert torch.get_num_threads() == threads  # the run's thread setting did not leak out
    return result


def test_test_curve_spans_the_run_from_the_initial_model(run):
    curve = run["test_curve"]
    steps, scores, seconds = zip(*curve, strict=True)
    assert steps[0] == 0 and seconds[0] == 0.0  # scored before the first step
    assert list(steps) == sorted(steps) and list(seconds) == sorted(seconds)
    assert len(set(steps)) == len(steps)  # one test per point in time, never repeated
    assert run["steps"] == 12, "the run trains exactly the steps asked for"
    assert steps[-1] == run["steps"] and seconds[-1] == pytest.approx(run["train_seconds"])
    assert all(0 < s < math.log2(17) for s in scores)  # below the uniform model
    assert scores[-1] < scores[0]  # the run learned


def test_sample_grids_come_from_copies_taken_during_the_same_run(run):
    grids = run["grids"]
    assert len(grids) == 3
    steps = [step for step, _ in grids]
    assert steps == sorted(steps) and steps[-1] == run["steps"] and steps[0] < run["steps"]
    for _, images in grids:
        assert images.shape == (9, 1, 8, 8) and images.dtype == torch.long
        assert 0 <= int(images.min()) and int(images.max()) < run["levels"]
    # the copies were frozen when taken: the same seed draws other images from a later model
    assert not torch.equal(grids[0][1], grids[-1][1])


def test_draw_is_reproducible_for_a_seed():
    from densitylab.models.registry import build_model

    model = build_model("rnn", (1, 4, 4), 5, {"coords": True, "hidden_size": 8})
    assert torch.equal(draw(model, 6, seed=3), draw(model, 6, seed=3))
    assert not torch.equal(draw(model, 6, seed=3), draw(model, 6, seed=4))
