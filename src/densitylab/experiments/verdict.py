"""Verdict rules: how the numbers of several seeds become one of four outcomes.

Every claim is judged by a rule stated before its result (the report prints the rule first):

- **Paired comparison** (:class:`PairedRule`): arms A (the claim's "better" one) and B train the same
  number of optimizer steps with the same seeds. The *gain* of seed ``s`` is ``B_s - A_s`` for a
  score where lower is better (bits/dim), ``A_s - B_s`` where higher is better. With ``n`` seeds,
  mean gain ``m``, standard deviation ``sd`` and standard error ``se = sd / sqrt(n)``, and a size
  ``M = min_relative * |mean of B|`` (0 for claims of direction alone):

  - *reproduced*: ``m > 2 se`` and ``m >= M``;
  - *direction only*: ``m > 2 se`` but ``m < M`` (the sign holds, the claimed size does not);
  - *not reproduced*: ``m < -2 se`` (the opposite holds), or a size claim whose upper end
    ``m + 2 se`` falls short of ``M`` (the claimed size is ruled out);
  - *inconclusive*: otherwise (the difference is within the noise of the seeds).

- **Threshold check** (:class:`ThresholdRule`): a statistic per seed must stay below (or above) a
  bar: *reproduced* when ``mean + 2 se`` is on the right side of it, *not reproduced* when
  ``mean - 2 se`` is on the wrong side, else *inconclusive*.

Two guards come before either rule: an arm that trained fewer than ``min_steps`` steps makes the
verdict *inconclusive (budget too small)*, and the ``tiny`` budget (a smoke test, seconds long) is
always *inconclusive (budget too small)*. Fewer than two seeds give no error bar: *inconclusive*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

REPRODUCED = "reproduced"
DIRECTION_ONLY = "direction only"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
TOO_SMALL = "inconclusive (budget too small)"
MEASUREMENT = "measurement"  # no claim to test: a table or a figure to look at
OUTCOMES = (REPRODUCED, DIRECTION_ONLY, NOT_REPRODUCED, INCONCLUSIVE, TOO_SMALL, MEASUREMENT)
SMOKE_BUDGET = "tiny"


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def standard_error(values: Sequence[float]) -> float:
    """``sd / sqrt(n)`` (0 for a single value)."""
    return mean_sd(values)[1] / math.sqrt(len(values))


def plus_minus(values: Sequence[float], digits: int = 3) -> str:
    """``"mean +- sd"`` of the values."""
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} +- {sd:.{digits}f}"


def small_budget_text(min_steps: int, who: str) -> str:
    """The sentence of the budget guard."""
    if min_steps:
        return (f"Inconclusive (budget too small) when {who} trained fewer than {min_steps} steps, "
                "and always at the tiny budget (a smoke test).")
    return "Inconclusive (budget too small) always at the tiny budget (a smoke test)."


def guard(budget: str, steps: Sequence[int] = (), min_steps: int = 0) -> str | None:
    """The outcome forced before any rule (tiny budget, too few steps), or ``None``."""
    if budget == SMOKE_BUDGET or any(s < min_steps for s in steps):
        return TOO_SMALL
    return None


@dataclass(frozen=True)
class PairedRule:
    """Arm ``better`` beats arm ``other`` on ``measure`` (see the module docstring)."""

    measure: str
    better: str
    other: str
    lower_is_better: bool = True
    min_relative: float = 0.0  # a claim of size: the gain must reach this share of |other|
    min_steps: int = 0

    def text(self) -> str:
        gain = (f"{self.other} - {self.better}" if self.lower_is_better
                else f"{self.better} - {self.other}")
        size = (f" and at least {self.min_relative:.0%} of {self.other}'s mean"
                if self.min_relative else "")
        short = (f"; not reproduced also when even mean + 2 SE falls short of "
                 f"{self.min_relative:.0%}" if self.min_relative else "")
        return (f"Per seed, the gain is {gain} in {self.measure} (same seed, same number of "
                f"optimizer steps). Reproduced when the mean gain exceeds twice its standard error "
                f"(SE = sd / sqrt(seeds)){size}; "
                + ("direction only when it exceeds 2 SE but not the size; " if self.min_relative
                   else "")
                + f"not reproduced when it is below -2 SE{short}; otherwise inconclusive. "
                + small_budget_text(self.min_steps, "an arm"))

    def gains(self, better: Sequence[float], other: Sequence[float]) -> list[float]:
        if len(better) != len(other):
            raise ValueError("paired values need one per seed in both arms")
        sign = 1.0 if self.lower_is_better else -1.0
        return [sign * (float(o) - float(b)) for b, o in zip(better, other, strict=True)]

    def judge(self, better: Sequence[float], other: Sequence[float], budget: str,
              steps: Sequence[int] = ()) -> str:
        forced = guard(budget, steps, self.min_steps)
        if forced:
            return forced
        return decide_paired(self.gains(better, other), abs(mean_sd(other)[0]), self.min_relative)


def decide_paired(gains: Sequence[float], reference: float, min_relative: float = 0.0) -> str:
    """The paired rule on per-seed gains (positive: the claim's direction); ``reference`` is the
    magnitude the relative size is measured against."""
    if len(gains) < 2:
        return INCONCLUSIVE
    mean, se = mean_sd(gains)[0], standard_error(gains)
    size = min_relative * reference
    if mean > 2 * se:
        return REPRODUCED if mean >= size else DIRECTION_ONLY
    if mean < -2 * se:
        return NOT_REPRODUCED
    if min_relative and mean + 2 * se < size:
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class ThresholdRule:
    """A per-seed statistic ``measure`` must be below (``below=True``) or above ``threshold``."""

    measure: str
    threshold: float
    below: bool = True
    min_steps: int = 0

    def text(self) -> str:
        side = "below" if self.below else "above"
        edge = "mean + 2 SE" if self.below else "mean - 2 SE"
        return (f"Reproduced when {self.measure}, over the seeds, is {side} {self.threshold:g} with "
                f"its {edge} (SE = sd / sqrt(seeds)); not reproduced when the other end of that "
                f"interval is on the wrong side; otherwise inconclusive. "
                + small_budget_text(self.min_steps, "a run"))

    def judge(self, values: Sequence[float], budget: str, steps: Sequence[int] = ()) -> str:
        forced = guard(budget, steps, self.min_steps)
        if forced:
            return forced
        return decide_threshold(values, self.threshold, self.below)


def decide_threshold(values: Sequence[float], threshold: float, below: bool = True) -> str:
    if len(values) < 2:
        return INCONCLUSIVE
    mean, se = mean_sd(values)[0], standard_error(values)
    sign = 1.0 if below else -1.0  # turn "above" into "below" by flipping signs
    mean, threshold = sign * mean, sign * threshold
    if not math.isfinite(mean):
        return NOT_REPRODUCED
    if mean + 2 * se < threshold:
        return REPRODUCED
    if mean - 2 * se > threshold:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def combine(outcomes: Sequence[str]) -> str:
    """One outcome for a claim judged in several parts, all of which must hold: budget too small
    beats everything; then any part not reproduced; then any inconclusive; then any direction
    only; reproduced only when every part is."""
    if not outcomes:
        raise ValueError("no outcomes to combine")
    for outcome in (TOO_SMALL, NOT_REPRODUCED, INCONCLUSIVE, DIRECTION_ONLY, MEASUREMENT):
        if outcome in outcomes:
            return outcome
    return REPRODUCED


def reproduced_flag(outcome: str) -> bool | None:
    """``True`` / ``False`` for the two firm outcomes, ``None`` for the others."""
    return {REPRODUCED: True, NOT_REPRODUCED: False}.get(outcome)
