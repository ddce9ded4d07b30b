"""The small error taxonomy of Cairn.

Every error maps to a behaviour the caller can rely on:

- ``CheckpointNotFoundError``: nothing to load where one was required; start fresh or fix the path.
- ``CheckpointCorruptError``: a file exists but fails a check; it names the file and the check.
  Load falls back to the previous valid checkpoint where the caller allows it.
- ``CheckpointMismatchError``: the checkpoint is readable but does not fit the model (a tensor's
  shape or a key differs): the caller's configuration is wrong, so load never falls back past it.
- ``CommitError``: a save did not become visible; the previous committed checkpoint is untouched.
- ``StaleGenerationError``: a writer from an older restart generation tried to publish or delete.
- ``AsyncSaveError``: a background save failed on some rank; raised on every rank at finalize.

No module of Cairn calls ``sys.exit``: library code raises one of these instead.
This module is torch-free.
"""

from __future__ import annotations

from pathlib import Path


class CairnError(Exception):
    """Base class of every error Cairn raises on purpose."""


class CheckpointNotFoundError(CairnError, FileNotFoundError):
    """No checkpoint exists where one was required."""


class CheckpointCorruptError(CairnError):
    """A checkpoint file exists but fails a validation check.

    ``path`` names the offending file and ``check`` says which check failed and what to do.
    """

    def __init__(self, path: str | Path, check: str) -> None:
        self.path = Path(path)
        self.check = check
        super().__init__(f"{self.path}: {check}")

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        # Errors are broadcast between ranks (pickled); rebuild from the constructor's arguments.
        return (type(self), (str(self.path), self.check))


class CheckpointMismatchError(CairnError, ValueError):
    """A readable checkpoint does not fit the model it is loaded into (shape or key mismatch)."""


class TrackerCorruptError(CheckpointCorruptError):
    """The tracker file (``latest_checkpointed_iteration.txt``) is empty, truncated or garbage."""


class CommitError(CairnError):
    """A save could not be committed; nothing of it became visible."""


class StaleGenerationError(CommitError):
    """A writer from an older restart generation tried to move the tracker or delete data."""

    def __init__(self, root: str | Path, mine: int, current: int) -> None:
        self.root = Path(root)
        self.mine = mine
        self.current = current
        super().__init__(
            f"{self.root}: writer of restart generation {mine} is stale (current generation is "
            f"{current}); it may not publish or delete checkpoints"
        )

    def __reduce__(self) -> tuple[type, tuple[str, int, int]]:
        return (type(self), (str(self.root), self.mine, self.current))


class AsyncSaveError(CommitError):
    """A background (async) save failed on at least one rank.

    Raised on every rank at the next finalize; ``failures`` maps rank to its error text.
    """

    def __init__(self, iteration: int, failures: dict[int, str]) -> None:
        self.iteration = iteration
        self.failures = dict(failures)
        detail = "; ".join(f"rank {r}: {msg}" for r, msg in sorted(self.failures.items()))
        super().__init__(f"async save of iteration {iteration} failed ({detail})")

    def __reduce__(self) -> tuple[type, tuple[int, dict[int, str]]]:
        return (type(self), (self.iteration, self.failures))


class PreemptedExit(SystemExit):
    """The job was asked to stop (SIGTERM) and Cairn saved (or could not, see the log): exit.

    A ``SystemExit`` with code 143 (128 + SIGTERM), the code of a process ended by SIGTERM, so
    restart policies treat it as a termination: a Job's ``podFailurePolicy`` can match it
    (``onExitCodes: {operator: In, values: [143]}``) to not count it against ``backoffLimit``.
    Scripts may catch it to clean up before exiting.
    """

    CODE = 143

    def __init__(self, message: str) -> None:
        super().__init__(self.CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message
