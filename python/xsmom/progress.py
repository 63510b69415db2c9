"""Progress on stderr for long commands: a tqdm bar for a person at a terminal, a few plain lines
for logs (systemd, CI), nothing when quiet (``--json``).

Plain lines are throttled (at most one per ``plain_every`` seconds, plus the last), so a log is not
flooded by a 1 000-trial optimisation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO


class Progress:
    """Counts ``done`` out of ``total`` units of ``what`` (``trials``, ``paths``, …)."""

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "",
        quiet: bool = False,
        stream: TextIO | None = None,
        plain_every: float = 10.0,
        tty: bool | None = None,
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.plain_every = plain_every
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self._bar: Any = None
        self._last_line = -float("inf")
        if not quiet and self.tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=f"xsmom: {what}", unit=unit, file=self.stream, leave=False)

    def update(self, done: int, note: str = "") -> None:
        """Set the count to ``done`` (monotone; a lower value is ignored)."""
        done = min(max(done, self.done), self.total)
        step, self.done = done - self.done, done
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(step)
            if note:  # refreshes the line (update alone is throttled to 10 redraws a second)
                self._bar.set_postfix_str(note)
            return
        now = time.monotonic()
        if done > 0 and (done == self.total or now - self._last_line >= self.plain_every):
            self._last_line = now
            suffix = f" {self.unit}" if self.unit else ""
            detail = f": {note}" if note else ""
            print(f"xsmom: {self.what} {done}/{self.total}{suffix}{detail}", file=self.stream, flush=True)

    def callback(self) -> Callable[[int, int, str], None]:
        """A ``(done, total, note)`` callback for library functions that report progress."""

        def report(done: int, total: int, note: str = "") -> None:
            if total != self.total:  # a new phase (e.g. the Monte Carlo after the trials)
                self.total, self.done = total, 0
                if self._bar is not None:
                    self._bar.reset(total=total)
            self.update(done, note)

        return report

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def steps(
    items: Iterable[Any], what: str, label: Callable[[Any], str] = str, quiet: bool = False
) -> Iterator[Any]:
    """Iterate ``items`` with one progress step per item, announced as the item starts
    (``fetching 2/5: ETHUSDT``)."""
    items = list(items)
    with Progress(what, len(items), quiet=quiet, plain_every=0.0) as progress:
        for i, item in enumerate(items):
            progress.update(i + 1, label(item))
            yield item
