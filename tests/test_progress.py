"""Progress lines for logs: one per tenth of the total, with the rate and the time left."""
from __future__ import annotations

import re

from pixeldit.infra.progress import Progress, duration, track


def test_one_line_per_tenth_when_not_on_a_terminal():
    lines: list[str] = []
    with Progress(1000, "sample euler-50", write=lines.append, terminal=False) as progress:
        for _ in range(40):
            progress.update(25)
    assert [int(re.search(r"\((\d+)%\)", line).group(1)) for line in lines] == list(range(10, 101, 10))
    assert re.fullmatch(r"sample euler-50: 1000/1000 img \(100%\), [\d.]+ img/s, ETA 0m00s", lines[-1]), lines[-1]


def test_a_big_step_reports_once_and_a_resumed_count_starts_at_its_tenth():
    lines: list[str] = []
    progress = Progress(20_000, "train", initial=5_000, scale=1000, scaled_unit="kimg", write=lines.append,
                        terminal=False)
    progress.update(10_000, loss=0.25)       # 25% -> 75% in one step: one line, not five
    assert len(lines) == 1 and lines[0].startswith("train: 15/20 kimg (75%), ") and "loss 0.2500" in lines[0]


def test_no_lines_on_a_terminal_unless_asked_and_none_when_disabled():
    lines: list[str] = []
    for options in ({"terminal": True}, {"terminal": False, "enabled": False}):
        list(track(range(10), "t", write=lines.append, **options))
    assert lines == []
    list(track(range(10), "t", write=lines.append, terminal=True, lines=True))
    assert len(lines) == 10


def test_an_overshooting_last_step_leaves_no_time():
    lines: list[str] = []
    with Progress(1000, "train", write=lines.append, terminal=False) as progress:
        progress.update(1024)
    assert lines[-1].startswith("train: 1024/1000 img (102%)") and lines[-1].endswith("ETA 0m00s"), lines


def test_durations_read_as_hours_minutes_seconds():
    assert (duration(4), duration(245), duration(3723), duration(float("inf"))) == ("0m04s", "4m05s", "1h02m03s",
                                                                                   "unknown")
