"""Media types and the error bodies the HTTP edge answers with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
_MEANS_JSON = {JSON, "application/*", "*/*"}


def response_media_type(accept: str | None) -> str:
    """The type the client ranks highest of the two we speak; `application/json` by default.

    A client that accepts neither still gets `application/json`, as the GraphQL-over-HTTP spec
    allows, rather than a 406.
    """
    best, best_rank = JSON, None
    for index, part in enumerate((accept or "").split(",")):
        media, *parameters = (piece.strip().lower() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0 or (media != GRAPHQL_RESPONSE and media not in _MEANS_JSON):
            continue
        rank = (quality, -index)
        if best_rank is None or rank > best_rank:
            best, best_rank = (GRAPHQL_RESPONSE if media == GRAPHQL_RESPONSE else JSON), rank
    return best


def media_type_of(headers: Headers) -> str:
    return response_media_type(headers.get("accept"))


class Refusal(Exception):
    """A request refused at the HTTP edge, answered with a GraphQL error body.

    `status` None means the request was well formed but cannot run (an unknown persisted
    query): 400 in `application/graphql-response+json`, 200 in `application/json`, like a
    validation error.
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        *,
        code: str = "BAD_REQUEST",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extensions = {"code": code, **extensions}
        self.headers = dict(headers or {})

    @property
    def outcome(self) -> str:
        """What the request log and the metrics record: `http_STATUS`, or the code of a
        request that is refused whatever its status (PERSISTED_QUERY_NOT_FOUND)."""
        code: str = self.extensions["code"]
        return code if self.status is None else f"http_{self.status}"

    def response(self, media_type: str) -> Response:
        status = self.status
        if status is None:
            status = 400 if media_type == GRAPHQL_RESPONSE else 200
        body = {"errors": [{"message": self.message, "extensions": self.extensions}]}
        return Response(
            json.dumps(body, separators=(",", ":")),
            status_code=status,
            media_type=media_type,
            headers={**self.headers, "Vary": "Accept"},
        )
