"""What a person watching a stage reads: log lines, and one live progress line on a terminal.

On a terminal (stderr is a tty) a long stage shows a tqdm line that stays at
the bottom, and log lines are written above it. Elsewhere (EMR steps, CI, a
pipe) there are no bars: :class:`Progress` prints a plain line at most every
``every_s`` seconds and at the end. Log lines carry no timestamp or module
name unless ``-v`` is given; a log file, when set, gets both at debug level.
Losses are reported in nats and, beside them, in bits (:func:`bits`).
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

PLAIN = "%(message)s"
DETAILED = "%(asctime)s %(levelname)s %(name)s: %(message)s"
T = TypeVar("T")


def bits(nats: float) -> float:
    """Nats (natural-log cross-entropy) in bits."""
    return nats / math.log(2)


def is_terminal(stream: IO | None = None) -> bool:
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _AboveBars(logging.StreamHandler):
    """Writes records with ``tqdm.write``, so a live progress line is redrawn below them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 - logging must never raise into the stage
            self.handleError(record)


class _Console(logging.Formatter):
    """``message`` for INFO and below, ``warning: message`` above it; with ``detailed``, the full format."""

    def __init__(self, detailed: bool):
        super().__init__(DETAILED if detailed else PLAIN)
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.detailed and record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def setup_logging(verbose: bool = False, log_file: str = "") -> None:
    """Console logging (INFO, or DEBUG with ``verbose``), and a detailed DEBUG log in ``log_file`` when set.

    Where the root logger already has handlers of someone else's (an application embedding the stages,
    pytest), they stay, and neither a console handler nor the root's level is set, as with
    ``logging.basicConfig``; a log file is added all the same.
    """
    root = logging.getLogger()
    for h in [h for h in root.handlers if getattr(h, "waveforms", False)]:
        root.removeHandler(h)
        h.close()
    handlers: list[logging.Handler] = []
    ours = not root.handlers
    if ours:
        console = _AboveBars(sys.stderr)
        console.setLevel(logging.DEBUG if verbose else logging.INFO)
        console.setFormatter(_Console(verbose))
        handlers.append(console)
    if log_file:
        file = logging.FileHandler(log_file, encoding="utf-8")
        file.setFormatter(logging.Formatter(DETAILED))
        handlers.append(file)
    for h in handlers:
        h.waveforms = True  # type: ignore[attr-defined]
        root.addHandler(h)
    if ours or log_file:
        root.setLevel(logging.DEBUG if (verbose or log_file) else logging.INFO)
        # a library's INFO lines (matplotlib's "generated new fontManager" on a first run) are not the stage's
        logging.getLogger("matplotlib").setLevel(logging.INFO if verbose else logging.WARNING)


def human(x: float) -> str:
    """A count in a reader's units: 950, 86k, 1.2M (three significant figures at most)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def clock(seconds: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _size(stream: IO) -> tuple[int, int]:
    """The terminal's columns and lines, or 100 x 24 where it reports none (a fresh pseudo-terminal says 0 x 0,
    and tqdm draws nothing in a terminal of 0 lines)."""
    try:
        size = os.get_terminal_size(stream.fileno())
        return size.columns or 100, size.lines or 24
    except (AttributeError, OSError, ValueError):
        return 100, 24


class _Line(tqdm):
    """A tqdm line whose ``{status}`` field is free text (tqdm's own ``{postfix}`` adds a comma)."""

    status = ""

    @property
    def format_dict(self):
        return {**super().format_dict, "status": self.status}


class Progress:
    """One long task's progress: a live line on a terminal; elsewhere a plain line every ``every_s`` seconds.

    ``update(done, total, status)`` sets the absolute position; ``status`` is free text shown after the
    count. With ``eta`` the time left, at the average rate so far, is added to it; a caller that knows
    better what bounds the time (a training budget) passes ``eta=False`` and says it in ``status``.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "", *, every_s: float = 30.0,
                 stream: IO | None = None, live: bool | None = None, eta: bool = True, plain: bool = True):
        self.desc, self.total, self.unit, self.every_s, self.eta = desc, total, unit, every_s, eta
        self.plain = plain  # False: no plain lines (the caller logs its own)
        self._drawn_at = 0.0
        self.started = time.monotonic()
        self.stream = stream or sys.stderr
        self.live = is_terminal(self.stream) if live is None else live
        self.done, self.status = 0, ""
        self._printed_at = time.monotonic()
        self._printed: tuple[int, str] | None = None
        self.bar = None
        if self.live:
            columns, lines = _size(self.stream)
            self.bar = _Line(total=total, desc=desc, unit=f" {unit}" if unit else "", file=self.stream,
                             bar_format="{desc}: {n_fmt}/{total_fmt}{unit} {bar:20} {status}",
                             ncols=columns, nrows=lines, leave=True)

    def line(self) -> str:
        """The plain form of the current position."""
        of = f"/{self.total}" if self.total else ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.desc}: {self.done}{of}{unit}" + (f" · {self.status}" if self.status else "")

    def update(self, done: int, total: int | None = None, status: str = "", force: bool = False) -> None:
        if total is not None:
            self.total = int(total)
        if self.eta and self.total and 0 < done < self.total:
            left = clock((time.monotonic() - self.started) * (self.total - done) / done) + " left"
            status = f"{status} · {left}" if status else left
        self.done, self.status = int(done), status
        if self.bar is not None:
            now = time.monotonic()
            if force or now - self._drawn_at >= 0.1 or done == self.total:
                self.bar.total = self.total
                self.bar.n = self.done
                self.bar.status = status
                self.bar.refresh()
                self._drawn_at = now
        elif self.plain and (force or time.monotonic() - self._printed_at >= self.every_s):
            self._print()

    def _print(self) -> None:
        if self._printed == (self.done, self.status):
            return
        print(self.line(), file=self.stream, flush=True)
        self._printed, self._printed_at = (self.done, self.status), time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.done and self.plain:
            self._print()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def watching(progress: Progress, read: Callable[[], int], interval_s: float = 0.5) -> Iterator[Progress]:
    """Poll ``read()`` (a counter a running job reports, e.g. a Spark accumulator) into ``progress``."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            progress.update(min(read(), progress.total or sys.maxsize))

    thread = threading.Thread(target=poll, name=f"progress-{progress.desc}", daemon=True)
    thread.start()
    try:
        yield progress
    finally:
        stop.set()
        thread.join()
        progress.update(min(read(), progress.total or sys.maxsize), force=True)
        progress.close()


def counted(items: Iterable[T], counter) -> Iterator[T]:
    """``items``, adding 1 to ``counter`` (e.g. a Spark accumulator, in a task) as each one is finished with."""
    for item in items:
        yield item
        counter.add(1)
