"""The stream job's own error, and the line of an error worth showing (py4j wraps whole tracebacks)."""

from __future__ import annotations


class StreamJobError(RuntimeError):
    """The job cannot start or cannot go on; the message says what to fix."""


def first_line(error: BaseException) -> str:
    """The sink's own message when py4j wrapped it, else the error's first unindented line."""
    from streaming.bronze_sink import BronzeHoleError, PoisonBatchError

    if isinstance(error, PoisonBatchError | BronzeHoleError):
        return str(error).strip()
    text = str(error).strip()
    for marker in (f"{PoisonBatchError.__name__}: ", f"{BronzeHoleError.__name__}: "):
        for line in text.splitlines():
            if marker in line:  # the sink's own message, from inside py4j's traceback
                return line.split(marker, 1)[1].strip()[:1000]
    for line in text.splitlines():
        # Not a traceback's indented frame lines: py4j wraps a Python error's whole traceback.
        if line.strip() and not line[:1].isspace() and "Traceback" not in line:
            return line.strip()[:300]
    return type(error).__name__
