"""What the commands share beyond ``lstm_conformance.api`` (which does the work): messages on stderr, the
progress line, describing a model."""

from __future__ import annotations

import sys
import threading
import time

from lstm_conformance.reference.layout import LSTMConfig

PROG = "lstm-conformance"


# ----------------------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------------------


def warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


class Progress:
    """One status line on stderr with the elapsed time, rewritten in place every half second while a step runs
    (a framework writing 400 MB says nothing for a while), only when stderr is a terminal: never in logs."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.message = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def step(self, message: str) -> None:
        if not self.enabled:
            return
        self.message = message
        self._draw()
        if self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="lstm-conformance-progress", daemon=True)
            self._ticker.start()

    def done(self) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r\x1b[K[{elapsed:6.1f} s] {self.message}")
        sys.stderr.flush()


def assumption(message: str) -> None:
    """An assumption the reading made that changes the function (the file does not store it)."""
    print(f"{PROG}: assumption: {' '.join(message.split())}", file=sys.stderr)


def shortened(names: list[str], limit: int = 8) -> str:
    """ "a, b, c (3 tensors)", or the first ``limit`` names then "..." when there are more."""
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{shown} ({len(names)} tensor{'' if len(names) == 1 else 's'})"


# ----------------------------------------------------------------------------------------------------------
# Describing
# ----------------------------------------------------------------------------------------------------------


def describe_config(config: LSTMConfig) -> str:
    parts = [f"{config.num_layers} layer{'s' if config.num_layers > 1 else ''}"]
    parts.append("bidirectional" if config.bidirectional else "unidirectional")
    parts.append(f"input {config.input_size}, hidden {config.hidden_size}")
    if config.proj_size:
        parts.append(f"projected to {config.proj_size}")
    return ", ".join(parts)
