"""RFC 3339 timestamps as the Checkpoint resource carries them, both ways. Torch-free.

The API server writes second precision with a ``Z`` suffix; the agent's reports keep
microseconds so that two reports within one second still order correctly.
"""

from __future__ import annotations

import datetime as dt


def format_time(moment: dt.datetime | float, *, fractional: bool = False) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; ``moment`` may be a Unix time.

    A naive datetime is taken as UTC. ``fractional`` keeps microseconds.
    """
    if isinstance(moment, (int, float)):
        moment = dt.datetime.fromtimestamp(moment, dt.UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if fractional else "%Y-%m-%dT%H:%M:%SZ"
    return moment.astimezone(dt.UTC).strftime(pattern)


def now_time(*, fractional: bool = False) -> str:
    """The current time, formatted by ``format_time``."""
    return format_time(dt.datetime.now(dt.UTC), fractional=fractional)


def parse_time(value: object) -> dt.datetime | None:
    """An aware datetime from RFC 3339 text (naive taken as UTC); None if absent or malformed."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
