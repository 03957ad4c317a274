"""Cost budgets per user (issue 18): a token bucket per viewer, charged each operation's cost.

Where the design comes from: Apollo Router's demand control (charging an operation's
estimated cost), Hasura's and Grafbase's limits per user, GitHub's GraphQL points per hour.

- The key is the viewer (`user:<id>`), or the client address for anonymous requests
  (`address:<ip>`).
- An operation costs its estimate (`schema.complexity`: objects it may return); a mutation at
  least `mutation_minimum`. A subscription costs nothing to open and its estimate for each
  event delivered (`charged_events`); past its budget it gets one RATE_LIMITED error and ends.
- The bucket holds at most `burst` and refills at `per_minute` / 60 a second. An operation
  runs when the bucket holds its cost. One dearer than `burst` could never be paid, so it is
  not told to wait: with budgets on, the cost limit (`CHATQL_MAX_QUERY_COST`, QUERY_TOO_COMPLEX,
  `schema.limits`) is at most the burst (`app.settings.Settings.schema_config`; Shopify's
  "single query max cost" is its bucket's size for the same reason), and a mutation minimum
  above it is refused at start. What is charged outside GraphQL's limits (an export, whose
  size is the account's) runs when the bucket is full and leaves it below zero: a debt, paid
  back by waiting. Refused, it is RATE_LIMITED with
  `extensions.retryAfter` (seconds until it could run), which HTTP answers 429 with
  `Retry-After`; every HTTP answer carries `RateLimit-Policy` and `RateLimit` (IETF draft
  "RateLimit header fields for HTTP").

Exact within a process: the bucket is in memory, charged in order of arrival. Shared
across processes through PostgreSQL (`db.budgets`): each process reconciles a key at most once
per `sync_interval` (1 s), when a request of that key comes, by adding what it spent since to
the key's shared total (one upsert statement) and taking from its own bucket what the others
added meanwhile. One process alone is exact; with N processes, what they admit for one key over
any span of T seconds is at most `burst + rate * T + (N - 1) * (burst + rate * 2 *
sync_interval)`: news of another process's spending reaches a process within two intervals (one
for the other to report it, one for this one to hear it), and in that time the other spends at
most what its bucket held plus its refill. Any excess is owed (buckets go below zero) and paid
back by waiting. A process that stops getting requests of a key reports its last second's
spending when the next one comes. On SQLite (one process) nothing is shared. The clock is
injectable (`clock`, seconds since the epoch: processes compare their times through the
database).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, OperationType, get_operation_ast
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import ExecutionResult, PreExecutionError

from db.budgets import reconcile
from db.engine import write_transaction
from db.errors import Unavailable
from loaders import Viewer
from schema.errors import OverBudget
from schema.limits import MEASURED

logger = logging.getLogger("chatql.budgets")

UNKNOWN_ADDRESS = "unknown"
# Buckets made between two sweeps of the idle, full ones out of memory.
SWEEP_EVERY = 1000
# In a context's extras and the HTTP request's state: the operation's charge; and, for a
# subscription, the key and cost each event is charged.
BUDGET = "budget"
EVENT_COST = "budget_event_cost"


@dataclass
class Bucket:
    """One key's bucket in this process: `tokens` as of `at` (the clock's seconds)."""

    tokens: float
    at: float
    # Charged here since the last reconciliation, and when that was (None: never).
    pending: float = 0.0
    synced: float | None = None
    # The shared bucket's total spent when this process last heard it.
    seen: float = 0.0
    syncing: bool = False


@dataclass(frozen=True)
class Charge:
    """A bucket's state after a charge (or a look): whether the operation may run, what the
    bucket holds, and the seconds until it could (0 when it may)."""

    allowed: bool
    remaining: float
    retry_after: int
    reset: int


class Budgets:
    """Every key's bucket in this process (see the module): `per_minute` and `burst` in cost
    units (objects an operation may return), `sync_interval` in seconds."""

    def __init__(
        self,
        *,
        per_minute: float,
        burst: float,
        mutation_minimum: int = 0,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        sync_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`sessionmaker` is PostgreSQL's, to share buckets across processes; None keeps
        them in this process alone."""
        self.rate = per_minute / 60
        self.burst = burst
        self.mutation_minimum = mutation_minimum
        self.sessionmaker = sessionmaker
        self.sync_interval = sync_interval
        self.clock = clock
        self.buckets: dict[str, Bucket] = {}
        self.made = 0
        # The window of the RateLimit-Policy header: seconds to refill an empty bucket.
        self.window = math.ceil(burst / self.rate) if self.rate else 0
        self.policy = f'"cost";q={int(burst)};w={self.window}'

    @staticmethod
    def key_of(viewer: Viewer | None, client_address: str | None) -> str:
        if viewer is not None:
            return f"user:{viewer.id}"
        return f"address:{(client_address or UNKNOWN_ADDRESS)[:90]}"

    def cost_of(self, estimate: int, *, mutation: bool) -> int:
        return max(estimate, self.mutation_minimum) if mutation else estimate

    def bucket(self, key: str, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(tokens=self.burst, at=now)
            self.made += 1
            if self.made % SWEEP_EVERY == 0:
                self.sweep(now)
        elif now > bucket.at:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        return bucket

    def sweep(self, now: float) -> None:
        """Forget the buckets that have refilled and have nothing to reconcile."""
        full = self.burst / self.rate if self.rate else math.inf
        for key, bucket in list(self.buckets.items()):
            if not bucket.pending and not bucket.syncing and now - bucket.at > full:
                del self.buckets[key]

    async def charge(self, key: str, cost: int) -> Charge:
        """Take `cost` from the bucket of `key` if it holds it (see the module)."""
        now = self.clock()
        bucket = self.bucket(key, now)
        if self.sessionmaker is not None and not bucket.syncing:
            if bucket.synced is None or now - bucket.synced >= self.sync_interval:
                await self.sync(key, bucket, now)
                bucket = self.bucket(key, self.clock())
        needed = min(cost, self.burst)
        if bucket.tokens < needed:
            return self.state(bucket, refused_for=needed)
        bucket.tokens -= cost
        bucket.pending += cost
        return self.state(bucket)

    def peek(self, key: str) -> Charge:
        """The bucket's state without a charge: refused while it owes (below zero), until
        it is paid back (a subscription, free to open, is not opened in debt)."""
        bucket = self.bucket(key, self.clock())
        return self.state(bucket, refused_for=0.0 if bucket.tokens < 0 else None)

    def state(self, bucket: Bucket, *, refused_for: float | None = None) -> Charge:
        """The bucket's state; refused, with the seconds until it holds `refused_for`. (An
        admitted charge may leave the bucket below zero: that is a debt, not a refusal.)"""
        if refused_for is None:
            retry_after = 0
        else:
            retry_after = self.seconds(refused_for - bucket.tokens)
        reset = self.seconds(self.burst - bucket.tokens) if bucket.tokens < self.burst else 0
        return Charge(refused_for is None, max(bucket.tokens, 0.0), retry_after, reset)

    def seconds(self, tokens: float) -> int:
        if tokens <= 0:
            return 0
        return max(1, math.ceil(tokens / self.rate)) if self.rate else 2**31 - 1

    async def sync(self, key: str, bucket: Bucket, now: float) -> None:
        """Send what this process spent of `key` since the last time; hear what the other
        processes spent meanwhile, and take it from the bucket. The first time, the bucket
        starts from the shared one's level instead (which errs low: it refills as if all
        spending came last). A database that does not answer leaves the bucket local until
        next time."""
        assert self.sessionmaker is not None
        sent = bucket.pending
        bucket.syncing = True
        try:
            async with write_transaction(self.sessionmaker) as session:
                shared = await reconcile(
                    session, key=key, spent=sent, now=now, burst=self.burst, rate=self.rate
                )
        except Unavailable as exc:
            logger.warning("cost budget of %s not reconciled: %s", key, exc)
            return
        finally:
            bucket.syncing = False
        # Spent here while the statement ran is not in the shared bucket yet.
        bucket.pending -= sent
        later = self.clock()
        if bucket.synced is None:
            level = shared.tokens + max(later - shared.updated, 0.0) * self.rate
            bucket.tokens = min(self.burst, level) - bucket.pending
            bucket.at = later
        else:
            others = shared.spent - bucket.seen - sent
            bucket.tokens -= max(others, 0.0)
        bucket.seen = shared.spent
        bucket.synced = now

    def headers(self, charge: Charge) -> dict[str, str]:
        """The IETF draft's fields for a bucket's state."""
        return {
            "RateLimit-Policy": self.policy,
            "RateLimit": f'"cost";r={int(charge.remaining)};t={charge.reset}',
        }


def over_budget(charge: Charge) -> GraphQLError:
    error = OverBudget(charge.retry_after)
    return GraphQLError(error.message, extensions=error.extensions, original_error=error)


def over_budget_of(result: object) -> int | None:
    """The seconds to wait, when the budget refused the operation of `result`."""
    errors = getattr(result, "errors", None) or ()
    if errors and isinstance(errors[0].original_error, OverBudget):
        return errors[0].original_error.retry_after
    return None


def budgets_of(context: object) -> Budgets | None:
    budgets: Budgets | None = getattr(getattr(context, "services", None), "budgets", None)
    return budgets


async def charge_operation(
    context: Any,
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: dict[str, Any] | None,
) -> Charge | None:
    """Charge the viewer's budget for one operation (once per request, whatever the path);
    None when budgets are off. A subscription is only looked at here: `charged_events`
    charges its events. The HTTP view reads the charge from the request's state (`BUDGET`)
    for its headers."""
    budgets = budgets_of(context)
    if budgets is None:
        return None
    extras: dict[str, Any] = context.extras
    done: Charge | None = extras.get(BUDGET)
    if done is not None:
        return done
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return None
    measures = MEASURED(document).measures(
        schema,
        document,
        operation_name,
        variables or {},
        default_page_size=context.config.default_page_size,
    )
    estimate = measures.cost if measures is not None else 0
    key = budgets.key_of(context.viewer, context.client_address)
    if operation.operation is OperationType.SUBSCRIPTION:
        extras[EVENT_COST] = (key, estimate)
        charge = budgets.peek(key)
    else:
        mutation = operation.operation is OperationType.MUTATION
        charge = await budgets.charge(key, budgets.cost_of(estimate, mutation=mutation))
    extras[BUDGET] = charge
    state = getattr(context.request, "state", None)
    if state is not None:
        setattr(state, BUDGET, charge)
    return charge


class Budgeted(SchemaExtension):
    """Charges each operation before it runs, after every check that may refuse it (so a
    refused operation costs nothing); over budget, it is RATE_LIMITED and does not run."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        if execution.result is None and document is not None:
            charge = await charge_operation(
                execution.context,
                execution.schema._schema,
                document,
                execution.operation_name,
                execution.variables,
            )
            if charge is not None and not charge.allowed:
                execution.result = PreExecutionError(data=None, errors=[over_budget(charge)])
        yield


async def charged_events(
    results: AsyncGenerator[Any, None], context: Any
) -> AsyncGenerator[Any, None]:
    """A stream with each event of a subscription charged its estimate (see
    `charge_operation`); the first one the budget cannot pay is replaced by a RATE_LIMITED
    error, and the stream ends there. Other operations' single results pass as they are."""
    budgets = budgets_of(context)
    try:
        async for result in results:
            charging = context.extras.get(EVENT_COST) if budgets is not None else None
            if charging is not None and getattr(result, "data", None) is not None:
                key, cost = charging
                charge = await budgets.charge(key, cost)  # type: ignore[union-attr]
                if not charge.allowed:
                    yield ExecutionResult(data=None, errors=[over_budget(charge)])
                    return
            yield result
    finally:
        await results.aclose()
