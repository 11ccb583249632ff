"""SIGTERM handled like Ctrl-C, and stretches of work that a stop must not cut in two.

A cluster scheduler, ``ray job stop`` and ``docker stop`` end a program with SIGTERM.
:func:`handle_sigterm` turns it into :class:`Terminated`, a ``KeyboardInterrupt``, so a
search stops the way Ctrl-C stops it: the session is recorded and the command says how
to resume. :func:`deferred` holds both signals back while a trial is being journaled, so
a stop never leaves a trial half recorded; the stop is raised as soon as the line is whole.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """The process was asked to stop by a signal other than Ctrl-C (SIGTERM)."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise Terminated(signum)


@contextmanager
def handle_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` in the main thread (as SIGINT
    raises ``KeyboardInterrupt``); the previous handler is restored after it. Only the main
    thread may set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sigterm_handled() -> bool:
    return signal.getsignal(signal.SIGTERM) is _raise_terminated


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the body, then act on the first one that came."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}

    def remember(signum: int, _frame: FrameType | None) -> None:
        caught.append(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        if callable(previous[signum]) or previous[signum] == signal.default_int_handler:
            signal.signal(signum, remember)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if caught:
        handler = previous[caught[0]]
        if callable(handler):
            handler(caught[0], None)
