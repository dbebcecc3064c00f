"""The verdict rules as pure functions: exact inputs give exact outcomes."""

import math

import pytest

from densitylab.experiments.base import check_record, seed_list, smoke_outcome, step_count
from densitylab.experiments.verdict import (
    DIRECTION_ONLY,
    INCONCLUSIVE,
    MEASUREMENT,
    NOT_REPRODUCED,
    REPRODUCED,
    TOO_SMALL,
    PairedRule,
    ThresholdRule,
    combine,
    decide_paired,
    decide_threshold,
    mean_sd,
    reproduced_flag,
    standard_error,
)


def test_mean_sd_and_standard_error_by_hand():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert standard_error([1.0, 2.0, 3.0]) == pytest.approx(1 / math.sqrt(3))
    assert mean_sd([4.0]) == (4.0, 0.0)


def test_paired_gain_beyond_two_standard_errors_is_reproduced():
    # gains 1, 2, 3: mean 2, se 0.577 -> 2 > 1.155
    assert decide_paired([1.0, 2.0, 3.0], reference=10.0) == REPRODUCED
    # a size claim of 10% of 10 = 1: met by a mean gain of 2
    assert decide_paired([1.0, 2.0, 3.0], reference=10.0, min_relative=0.1) == REPRODUCED


def test_a_clear_gain_below_the_claimed_size_is_direction_only():
    # mean 0.2, se 0.0577: clearly positive, but 20% of 10 = 2 is not reached
    assert decide_paired([0.1, 0.2, 0.3], reference=10.0, min_relative=0.2) == DIRECTION_ONLY


def test_a_size_claim_ruled_out_by_the_interval_is_not_reproduced():
    # mean 0.02, se 0.0577: within the noise, but mean + 2 se = 0.135 < 10% of 10 = 1
    assert decide_paired([-0.03, 0.02, 0.07], reference=10.0, min_relative=0.1) == NOT_REPRODUCED
    # the same gains for a claim of direction alone: inconclusive
    assert decide_paired([-0.03, 0.02, 0.07], reference=10.0) == INCONCLUSIVE


def test_a_clear_loss_is_not_reproduced_and_noise_is_inconclusive():
    assert decide_paired([-1.0, -2.0, -3.0], reference=10.0) == NOT_REPRODUCED
    assert decide_paired([-1.0, 1.0, 0.5], reference=10.0) == INCONCLUSIVE
    assert decide_paired([5.0], reference=10.0) == INCONCLUSIVE  # one seed: no error bar


def test_the_rnn_coordinate_gains_of_four_seeds_are_direction_only_for_drastically():
    # without 3.55, with coordinates 1.8-4.4% lower: clearly lower, not 10% lower
    without = [3.55, 3.56, 3.54, 3.55]
    with_ = [w * (1 - g) for w, g in zip(without, (0.018, 0.044, 0.03, 0.025), strict=True)]
    rule = PairedRule("test bits/dim", "with", "without", min_relative=0.10, min_steps=100)
    assert rule.judge(with_, without, "small", steps=[300] * 8) == DIRECTION_ONLY
    assert rule.judge(with_, without, "small", steps=[300, 300, 99, 300]) == TOO_SMALL
    assert rule.judge(with_, without, "tiny", steps=[300] * 8) == TOO_SMALL


def test_higher_is_better_flips_the_gain():
    rule = PairedRule("accuracy", "a", "b", lower_is_better=False)
    assert rule.gains([0.9, 0.8], [0.5, 0.6]) == pytest.approx([0.4, 0.2])
    assert rule.judge([0.9, 0.8, 0.85], [0.5, 0.6, 0.55], "small") == REPRODUCED
    assert rule.judge([0.5, 0.6, 0.55], [0.9, 0.8, 0.85], "small") == NOT_REPRODUCED
    with pytest.raises(ValueError):
        rule.gains([1.0], [1.0, 2.0])


def test_threshold_rule_below_and_above():
    assert decide_threshold([0.01, 0.02, 0.03], 0.05) == REPRODUCED  # 0.02 + 2 * 0.0058 < 0.05
    assert decide_threshold([0.1, 0.2, 0.3], 0.05) == NOT_REPRODUCED  # 0.2 - 0.115 > 0.05
    assert decide_threshold([0.0, 0.05, 0.1], 0.05) == INCONCLUSIVE
    assert decide_threshold([0.6, 0.7, 0.8], 0.5, below=False) == REPRODUCED
    assert decide_threshold([0.1, 0.2, 0.3], 0.5, below=False) == NOT_REPRODUCED
    assert decide_threshold([float("nan"), 0.1], 0.05) == NOT_REPRODUCED
    rule = ThresholdRule("gap", 0.05, min_steps=10)
    assert rule.judge([0.01, 0.02, 0.03], "small", steps=[10, 10, 10]) == REPRODUCED
    assert rule.judge([0.01, 0.02, 0.03], "small", steps=[10, 9, 10]) == TOO_SMALL
    assert rule.judge([0.01, 0.02, 0.03], "tiny") == TOO_SMALL


def test_combine_takes_the_weakest_part():
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, DIRECTION_ONLY]) == DIRECTION_ONLY
    assert combine([REPRODUCED, INCONCLUSIVE, DIRECTION_ONLY]) == INCONCLUSIVE
    assert combine([INCONCLUSIVE, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([NOT_REPRODUCED, TOO_SMALL]) == TOO_SMALL
    assert combine([MEASUREMENT]) == MEASUREMENT


def test_reproduced_flag_and_the_tiny_budget_never_reproduced():
    assert reproduced_flag(REPRODUCED) is True and reproduced_flag(NOT_REPRODUCED) is False
    assert reproduced_flag(DIRECTION_ONLY) is None and reproduced_flag(TOO_SMALL) is None
    assert smoke_outcome(REPRODUCED, "tiny") == TOO_SMALL
    assert smoke_outcome(NOT_REPRODUCED, "tiny") == NOT_REPRODUCED
    assert smoke_outcome(REPRODUCED, "small") == REPRODUCED


def test_budgets_give_seeds_and_steps():
    assert seed_list("tiny", 0) == [0, 1] and seed_list("small", 5) == [5, 6, 7]
    assert len(seed_list("full", 0)) == 5
    assert step_count("small", tiny=3, small=200) == 200 and step_count("full", 3, 200) == 2000


def record(**changes):
    base = {"verdict": "v", "rule": "r", "outcome": INCONCLUSIVE, "data": "d", "tables": [],
            "figures": [], "seeds": [0, 1, 2], "steps": {"a": 10}, "budget": "small"}
    return {**base, **changes}


def test_check_record_refuses_reproduced_at_tiny_and_too_few_seeds(tmp_path):
    check_record(record(), tmp_path)
    check_record(record(budget="tiny", seeds=[0, 1]), tmp_path)
    with pytest.raises(ValueError, match="smoke test"):
        check_record(record(budget="tiny", outcome=REPRODUCED), tmp_path)
    with pytest.raises(ValueError, match="needs 3 seeds"):
        check_record(record(seeds=[0, 1]), tmp_path)
    with pytest.raises(ValueError, match="outcome must be"):
        check_record(record(outcome="yes"), tmp_path)
    with pytest.raises(ValueError, match="'rule'"):
        check_record({k: v for k, v in record().items() if k != "rule"}, tmp_path)


def test_paired_comparison_builds_the_tables_and_the_outcome_from_the_runs():
    from densitylab.experiments.base import paired_comparison

    def runs(values):
        return [{"score": v, "steps": 300, "train_seconds": 10.0, "images_per_s": 640.0,
                 "parameters": 7} for v in values]

    arms = {"with": runs([3.0, 3.1, 2.9]), "without": runs([3.5, 3.7, 3.3])}
    rule = PairedRule("bits/dim", "with", "without", min_relative=0.10, min_steps=100)
    found = paired_comparison(rule, arms, "small", score="score")
    assert found["gains"] == pytest.approx([0.5, 0.6, 0.4])
    assert found["outcome"] == REPRODUCED  # mean gain 0.5 > 2 * 0.0577 and >= 10% of 3.5
    arm_table, gain_table = found["tables"]
    assert arm_table["rows"][0][:5] == ["with", 3.0, 0.1, "3.0000, 3.1000, 2.9000", 300]
    assert gain_table["rows"][0][:4] == ["without - with", 0.5, 0.1, round(0.1 / math.sqrt(3), 4)]
    assert "paired gain 0.5000 +- 0.1000 (+14.3% of without)" in found["summary"]
    assert paired_comparison(rule, arms, "tiny", score="score")["outcome"] == TOO_SMALL
