"""Reconnect pacing and bounded failure logs for the agent's background API threads.

An API server that is away for minutes must neither be hammered by rank 0 nor flood the training
log: each background loop backs off exponentially with jitter, logs the first failure of a streak
as a warning, repeats it at most once a minute, and says once when the API is back. Torch-free.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable


class Backoff:
    """Delays that double from ``initial_s`` up to ``max_s``, each scaled by a random factor in
    [0.5, 1) so that many jobs losing the same API server do not come back in lockstep."""

    def __init__(self, *, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s ({initial_s}) <= max_s ({max_s})")
        self._initial, self._max = initial_s, max_s
        self._rng = rng or random.Random()
        self._failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        base = min(self._max, self._initial * 2.0 ** min(self._failures, 30))
        self._failures += 1
        return base * (0.5 + self._rng.random() / 2)

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts from ``initial_s`` again."""
        self._failures = 0


class FailureLog:
    """Warns about the first failure of a streak and at most every ``every_s`` after it; notes the
    recovery once. Everything else goes to debug."""

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self._what, self._every, self._clock = logger, what, every_s, clock
        self._streak = 0
        self._last_warned = float("-inf")

    def failed(self, error: BaseException | str, retry_in_s: float | None = None) -> None:
        """One attempt failed with ``error``; the caller retries in ``retry_in_s`` seconds."""
        self._streak += 1
        then = f"; retrying in {retry_in_s:.1f}s" if retry_in_s is not None else ""
        now = self._clock()
        if self._streak == 1 or now - self._last_warned >= self._every:
            self._last_warned = now
            self._log.warning(
                "%s failed (%d in a row): %s%s", self._what, self._streak, error, then
            )
        else:
            self._log.debug("%s failed (%d in a row): %s%s", self._what, self._streak, error, then)

    def succeeded(self) -> None:
        """An attempt succeeded; logs the recovery if there was a streak."""
        if self._streak:
            self._log.info("%s works again after %d failed attempts", self._what, self._streak)
        self._streak = 0
        self._last_warned = float("-inf")


def describe(error: BaseException) -> str:
    """One line for a client failure: an API answer's status and reason, the cause of a failed
    connection (not urllib3's retry wrapper around it), else the exception."""
    status, reason = getattr(error, "status", None), getattr(error, "reason", None)
    if isinstance(status, int) and status:
        return f"HTTP {status} {reason or ''}".strip()
    if isinstance(reason, BaseException):  # urllib3.exceptions.MaxRetryError
        return describe(reason)
    return f"{type(error).__name__}: {error}"
