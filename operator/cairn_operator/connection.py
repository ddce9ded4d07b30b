"""The operator's HTTP session to the API server: kopf's credentials, a bounded connection pool.

kopf's own session opens a new connection for every request that finds none idle (its pool
has no limit). In a burst (thousands of Checkpoints changing within a minute) that is one
connection per object in flight: measured at 2,000 Checkpoints, about 990 connections, each
with its parser, read buffer and socket, all kept open afterwards. With a bounded pool, requests
beyond the bound wait for a free connection instead; each waiting request costs a coroutine,
not a connection. The watch streams hold one connection each for as long as they run, so the
bound must leave room above their count (``settings.OperatorSettings.api_connections``).
"""

from __future__ import annotations

import warnings

import aiohttp
import kopf


def bounded_session(info: kopf.ConnectionInfo, connections: int) -> kopf.AiohttpSession:
    """A session with ``info``'s endpoint, TLS and credentials and at most ``connections``
    connections, as kopf's ``AiohttpSession`` (call inside the event loop: the login handler)."""
    with warnings.catch_warnings():
        # aiohttp warns on any BasicAuth given to a session; kopf builds its own the same way.
        warnings.simplefilter("ignore", DeprecationWarning)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            auth=info.as_aiohttp_basic_auth(),
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )
