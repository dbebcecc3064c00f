"""How a training run shows its progress: a bar on a terminal, plain lines anywhere else.

On a terminal a tqdm bar counts steps (a run measured in epochs) or seconds of training (a run
measured by a time budget), so its total never changes mid-run. When the output goes to a file or
a pipe, carriage-return frames would pile up into one unreadable line; there the run prints one
line per ``log_every`` steps instead, at most one every ``min_seconds``.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class Progress:
    """Progress of one run from step ``step`` (``seconds`` of training already done)."""

    def __init__(self, total_steps: int | None, budget_seconds: float | None, step: int,
                 seconds: float, enabled: bool = True, stream: TextIO | None = None,
                 min_seconds: float = 10.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total_steps, self.budget_seconds = total_steps, budget_seconds
        self.min_seconds = min_seconds
        self.enabled = enabled
        self.bar = None
        self._last_line = -float("inf")
        if enabled and is_terminal(self.stream):
            from tqdm import tqdm

            by_time = total_steps is None and budget_seconds is not None
            self.by_time = by_time
            self.bar = tqdm(total=round(budget_seconds) if by_time else total_steps,
                            initial=min(seconds, budget_seconds) if by_time else step,
                            unit="s" if by_time else "step", dynamic_ncols=True, mininterval=1.0,
                            file=self.stream,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s of training [{elapsed}{postfix}]"
                            if by_time else None)

    def advance(self, step: int, seconds: float) -> None:
        """After each optimizer step."""
        if self.bar is None:
            return
        position = min(seconds, self.bar.total) if self.by_time else step
        self.bar.update(position - self.bar.n)

    def report(self, step: int, seconds: float, metrics: dict[str, str]) -> None:
        """At a logging step: the bar's postfix, or a line (if ``min_seconds`` passed since the last)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix(metrics, refresh=False)
            return
        now = time.monotonic()
        if now - self._last_line < self.min_seconds:
            return
        self._last_line = now
        self.line(f"{self.where(step, seconds)}: {', '.join(f'{k} {v}' for k, v in metrics.items())}")

    def where(self, step: int, seconds: float) -> str:
        """``step 200/575 (35%), 12 s`` or ``step 200, 12 s of 100 s (12%)``."""
        if self.total_steps:
            return f"step {step}/{self.total_steps} ({step / self.total_steps:.0%}), {seconds:.0f} s"
        if self.budget_seconds:
            return (f"step {step}, {seconds:.0f} s of {self.budget_seconds:.0f} s "
                    f"({min(seconds / self.budget_seconds, 1.0):.0%})")
        return f"step {step}, {seconds:.0f} s"

    def line(self, text: str) -> None:
        """A message that does not break the bar."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self, step: int, seconds: float) -> None:
        if self.bar is not None:
            if self.by_time:
                self.bar.update(self.bar.total - self.bar.n)  # a spent budget ends at 100%
            self.bar.close()
        elif self.enabled:
            self.line(f"{self.where(step, seconds)}: training done")
