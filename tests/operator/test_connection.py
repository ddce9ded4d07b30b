"""The operator's session to the API server keeps kopf's credentials and bounds its pool."""

from __future__ import annotations

import asyncio

import kopf
import pytest
from cairn_operator.connection import bounded_session
from cairn_operator.settings import MIN_API_CONNECTIONS, OperatorSettings


def test_session_carries_the_credentials_and_the_bound() -> None:
    info = kopf.ConnectionInfo(
        server="https://api.example:6443", token="t0ken", insecure=True, default_namespace="ml"
    )

    async def build() -> tuple[kopf.AiohttpSession, int, str | None]:
        context = bounded_session(info, 20)
        session = context.aiohttp_session
        try:
            return context, session.connector.limit, session.headers.get("Authorization")  # type: ignore[union-attr]
        finally:
            await session.close()

    context, limit, auth = asyncio.run(build())
    assert limit == 20
    assert auth == "Bearer t0ken"
    assert context.server == "https://api.example:6443"
    assert context.default_namespace == "ml"


def test_too_few_connections_for_the_watches_is_refused() -> None:
    with pytest.raises(ValueError, match="api_connections=8 must be >= 16"):
        OperatorSettings(api_connections=MIN_API_CONNECTIONS // 2)
