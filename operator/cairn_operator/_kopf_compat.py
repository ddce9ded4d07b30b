"""Every reach into kopf's private API, in one place (pinned: kopf==1.45.2).

kopf's public surface has no client for objects other than the one a handler was invoked for
(Jobs, Events of other objects, reads of a Checkpoint from a timer); its own authenticated API
client (``kopf._cogs.clients``) reuses the operator's login and settings, which is what the
operator needs. Re-check when the pin moves (tests/operator exercise every call).
"""

from __future__ import annotations

from kopf._cogs.clients import api, errors

__all__ = ["api", "errors"]
