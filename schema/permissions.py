"""Who may see and do what. Failures raise the contract's errors with fixed messages."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension

from loaders import Viewer
from schema.context import Context
from schema.errors import Forbidden, Unauthenticated


def require_viewer(context: Context) -> Viewer:
    if context.viewer is None:
        raise Unauthenticated()
    return context.viewer


def require_self_or_admin(context: Context, user_id: int) -> Viewer:
    viewer = require_viewer(context)
    if viewer.id != user_id and not viewer.is_admin:
        raise Forbidden()
    return viewer


def may_see_private_fields(viewer: Viewer | None, user_id: int) -> bool:
    return viewer is not None and (viewer.is_admin or viewer.id == user_id)


class RejectBadTokens(SchemaExtension):
    """A bad, forged or expired token fails the whole operation, so clients know to log in."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        error = getattr(context, "auth_error", None)
        if error is not None:
            self.execution_context.result = ExecutionResult(
                data=None, errors=[GraphQLError(error.message, original_error=error)]
            )
        yield
