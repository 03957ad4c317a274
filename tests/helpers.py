"""Plain helpers for tests: an API client and a statement counter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


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
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.client.post("/graphql", json=body, headers=all_headers)

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
