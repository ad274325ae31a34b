"""The one progress protocol: a callable `progress(fraction, message)`.

Every long-running function in fsad_core takes `progress: Progress | None` and calls it with the
fraction of the work done (0..1) and a line a person can read ("scored 12/40 cable_003.png"). The
same callable drives a terminal bar (`tqdm_progress`), a plain log (`printer`), or the studio's
`gr.Progress` (whose `__call__(progress, desc)` already has this shape: pass it straight through).
Nested stages report into a slice of the parent's bar with `scaled`; `monotonic` keeps a bar from
jumping back when stages overlap; `TimeLeft` keeps a time-left estimate from growing.

>>> seen = []
>>> p = scaled(lambda f, m: seen.append((round(f, 2), m)), 0.5, 1.0)
>>> p(0.5, "half of the second stage")
>>> seen
[(0.75, 'half of the second stage')]
>>> report(None, 0.3, "nobody listens")  # None is allowed everywhere
"""
from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Progress = Callable[[float, str], None]


def silent(fraction: float, message: str = "") -> None:
    """A progress callback that ignores every report (the default where a caller passes none)."""


def report(progress: Progress | None, fraction: float, message: str = "") -> None:
    """Call `progress` if there is one, with the fraction clamped to 0..1."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def steps(progress: Progress | None, done: int, total: int, message: str = "") -> None:
    """Report `done` of `total` units; the message gets the count ("12/40 message").

    >>> steps(lambda f, m: print(f, m), 3, 4, "images")
    0.75 3/4 images
    """
    report(progress, done / max(1, total), f"{done}/{total} {message}".rstrip())


def scaled(progress: Progress | None, start: float, end: float) -> Progress:
    """A callback whose 0..1 lands on `start..end` of `progress` (one stage of a longer job)."""
    def cb(fraction: float, message: str = "") -> None:
        report(progress, start + (end - start) * min(1.0, max(0.0, float(fraction))), message)
    return cb


def monotonic(progress: Progress | None) -> Progress:
    """A callback whose fraction never decreases (later stages may restart their own count).

    >>> seen = []
    >>> p = monotonic(lambda f, m: seen.append(f))
    >>> p(0.5, ""); p(0.2, ""); p(0.9, "")
    >>> seen
    [0.5, 0.5, 0.9]
    """
    state = {"frac": 0.0}

    def cb(fraction: float, message: str = "") -> None:
        state["frac"] = max(state["frac"], min(1.0, float(fraction)))
        report(progress, state["frac"], message)
    return cb


def format_seconds(s: float) -> str:
    """'45 s', '3 min', '1 h 05 min': the time left as a person reads it.

    >>> format_seconds(42), format_seconds(185), format_seconds(3900)
    ('42 s', '3 min', '1 h 05 min')
    """
    s = max(0.0, float(s))
    if s < 90:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


class TimeLeft:
    """The time left of a job as a person should see it: an estimate that never grows (a noisy
    per-step figure is clamped to the smallest one shown so far), as the suffix of a progress line.
    None = not measured yet: the last estimate shown stays, or nothing when there is none.

    >>> left = TimeLeft()
    >>> left(None), left(200), left(260), left(None), left(30)
    ('', ', about 3 min left', ', about 3 min left', ', about 3 min left', ', about 30 s left')
    """

    def __init__(self):
        self.seconds: float | None = None

    def __call__(self, seconds: float | None) -> str:
        if seconds is not None:
            self.seconds = float(seconds) if self.seconds is None else min(self.seconds, float(seconds))
        return "" if self.seconds is None else f", about {format_seconds(self.seconds)} left"


def printer(prefix: str = "", stream: TextIO | None = None, every: float = 0.0) -> Progress:
    """Print `prefix [ 42%] message` lines (for logs and CLIs without a terminal bar). `every`:
    at least this many seconds between lines, except the last (fraction 1) and the first of a new
    stage (a message whose text up to its first digit differs from the last printed one's).

    >>> p = printer("job", stream=sys.stdout, every=60)
    >>> p(0.0, "Training: step 1/9"); p(0.1, "Training: step 2/9"); p(0.9, "Pool: 1/2"); p(1.0, "Pool: 2/2")
    job: [  0%] Training: step 1/9
    job: [ 90%] Pool: 1/2
    job: [100%] Pool: 2/2
    """
    state = {"t": -1e9, "stage": None}

    def cb(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        stage = re.match(r"\D*", message).group(0)  # "Training: step " of "Training: step 12/200, …"
        if fraction < 1.0 and now - state["t"] < every and stage == state["stage"]:
            return
        state["t"], state["stage"] = now, stage
        head = f"{prefix}: " if prefix else ""
        print(f"{head}[{100 * fraction:3.0f}%] {message}".rstrip(), file=stream or sys.stderr, flush=True)
    return cb


@contextmanager
def tqdm_progress(desc: str = "", file: TextIO | None = None, disable: bool | None = None) -> Iterator[Progress]:
    """A terminal bar (tqdm) driven by `progress(fraction, message)`: the message is its postfix.

    `disable=None` hides the bar when the stream is not a terminal (tqdm's rule)."""
    from tqdm.auto import tqdm

    with tqdm(total=1000, desc=desc, file=file or sys.stderr, disable=disable,
              bar_format="{l_bar}{bar}| {elapsed}<{remaining} {postfix}") as bar:
        def cb(fraction: float, message: str = "") -> None:
            n = int(round(1000 * min(1.0, max(0.0, float(fraction)))))
            if n != bar.n:
                bar.update(n - bar.n)
            if message:
                bar.set_postfix_str(message, refresh=False)
        yield cb


def from_gradio(progress) -> Progress:
    """Wrap a `gr.Progress` (or anything called as `progress(fraction, desc)`) as a `Progress`.

    Gradio's tracker already has the protocol's shape; this only clamps the fraction and turns
    a missing tracker into `silent`."""
    if progress is None:
        return silent

    return lambda fraction, message="": report(progress, fraction, message)
