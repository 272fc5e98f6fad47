"""Progress of a long job, for a person at a terminal and for a log file alike.

On a terminal: a tqdm bar. Otherwise (a log under Snakemake, a pipe, a batch job): one plain line per tenth of
the total, e.g. ``sample shard-0000000-0000099: 50/100 img (50%), 12.3 img/s, ETA 0m04s``, so a slow job can be
told from a stuck one by reading its log.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def duration(seconds: float) -> str:
    """'1h02m03s', '4m05s'; 'unknown' for an infinite or undefined time."""
    if not math.isfinite(seconds):
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Progress:
    """Count `total` units from `initial`; `update(amount, **extras)` after each piece of work.

    `scale` / `scaled_unit` show the counts in a larger unit (training: images counted, kimg shown); the rate is
    always in `unit`/s. `write` receives the plain lines (default: stderr); `lines=True` writes them on a
    terminal too (a job that keeps its own log); `terminal` overrides the tty check.
    """

    def __init__(self, total: float, label: str, unit: str = "img", *, initial: float = 0, scale: float = 1,
                 scaled_unit: str | None = None, write: Callable[[str], None] = _to_stderr,
                 lines: bool | None = None, terminal: bool | None = None, enabled: bool = True):
        self.total, self.label, self.unit, self.scale = total, label, unit, scale
        self.shown_unit = scaled_unit or unit
        self.done = self.start_done = initial
        self.start, self.write, self.enabled = time.time(), write, enabled and total > 0
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.lines = not self.terminal if lines is None else lines
        self.next_tenth = math.floor(initial * 10 / total) + 1 if total > 0 else 11
        self.bar = tqdm(total=total / scale, initial=initial / scale, unit=self.shown_unit, desc=label,
                        disable=not (self.enabled and self.terminal), leave=False,
                        bar_format="{l_bar}{bar}| {n:.4g}/{total:.4g} {unit} [{elapsed}<{remaining}{postfix}]")

    def update(self, amount: float, **extras: float) -> None:
        self.done += amount
        self.bar.update(amount / self.scale)
        if extras:
            self.bar.set_postfix({key: f"{value:.4f}" for key, value in extras.items()}, refresh=False)
        if self.enabled and self.lines and self.done * 10 >= self.next_tenth * self.total:
            self.next_tenth = math.floor(self.done * 10 / self.total) + 1
            self.write(self.line(extras))

    def line(self, extras: dict[str, float] | None = None) -> str:
        elapsed = time.time() - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else math.inf
        eta = max(self.total - self.done, 0) / rate if rate > 0 else math.inf   # a last batch may overshoot
        shown = "".join(f", {key} {value:.4f}" for key, value in (extras or {}).items())
        return (f"{self.label}: {self.done / self.scale:g}/{self.total / self.scale:g} {self.shown_unit} "
                f"({100 * self.done / self.total:.0f}%), {rate:.1f} {self.unit}/s{shown}, ETA {duration(eta)}")

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def track(items: Iterable[T], label: str, unit: str = "img", total: int | None = None, **options) -> Iterator[T]:
    """Iterate `items` (one unit each; `total` defaults to their length) with a `Progress`."""
    items = list(items) if total is None else items
    with Progress(len(items) if total is None else total, label, unit, **options) as progress:
        for item in items:
            yield item
            progress.update(1)
