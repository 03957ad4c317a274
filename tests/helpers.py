"""Plain helpers for tests: an API client and a statement counter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette

from app.factory import create_app
from app.settings import Settings


@dataclass
class StatementCounter:
    seen: list[str] = field(default_factory=list)

    def record(self, statement: str) -> None:
        self.seen.append(statement)

    def reset(self) -> None:
        self.seen.clear()

    @property
    def count(self) -> int:
        return len(self.seen)


@dataclass
class Api:
    client: httpx.AsyncClient

    async def post(
        self,
        query: str | None,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        body: dict[str, Any] = {}
        if query is not None:
            body["query"] = query
        if variables is not None:
            body["variables"] = variables
        if extensions is not None:
            body["extensions"] = extensions
        return await self.client.post("/graphql", json=body, headers=all_headers)

    async def raw(
        self,
        method: str = "POST",
        *,
        params: dict[str, str] | None = None,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        """Any request to /graphql, for the transport rules: no body or headers are added."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        return await self.client.request(
            method, "/graphql", params=params, content=content, headers=all_headers
        )

    async def run(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The JSON result of a query; the HTTP status must be 200."""
        response = await self.post(query, variables, token=token)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def data(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The data of a query that must succeed without errors."""
        result = await self.run(query, variables, token=token)
        assert "errors" not in result, result["errors"]
        data: dict[str, Any] = result["data"]
        return data

    async def error(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> dict[str, Any]:
        """The single error of a query that must fail."""
        result = await self.run(query, variables, token=token)
        errors = result.get("errors")
        assert errors and len(errors) == 1, result
        error: dict[str, Any] = errors[0]
        return error


def codes(result: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in result.get("errors", [])]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, tracer_provider: Any = None, **changes: Any
) -> AsyncIterator[Starlette]:
    """Another app (its own engine and pools, as another process) with these settings changed,
    started and, at the end, stopped; its spans, when tracing is on, go to `tracer_provider`."""
    app = create_app(settings.model_copy(update=changes), tracer_provider=tracer_provider)
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def serve(settings: Settings, *, tracer_provider: Any = None) -> AsyncIterator[Api]:
    """Another app (another process, as far as it can tell) with its own settings."""
    async with running(settings, tracer_provider=tracer_provider) as app:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.8", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client)
