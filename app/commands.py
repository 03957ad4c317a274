"""The commands but `serve`: migrate, create-admin, seed, trust, import, import-chatgpt,
export-schema.

Each is `cmd_NAME(settings, args) -> exit status`; what one cannot do is a `CommandError`, which
`app.cli.main` prints in a line (no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from app.settings import DATA_DIR, Settings
from db.engine import make_engine, make_sessionmaker, ping
from db.migrate import upgrade_to_head
from schema import make_schema
from schema.auth import Passwords

if TYPE_CHECKING:
    from collections.abc import Iterable

    from db.imports import Importer
    from db.seed import SeedCounts
    from db.trusted_documents import Operation
    from ops.progress import RowProgress
    from schema.imports import ImportedConversation


class CommandError(Exception):
    """What a command could not do, in one line: `main` prints it and exits with `status`
    (2 for bad input or settings, 1 for anything else), without a traceback."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


async def migrate(settings: Settings) -> None:
    """Connect, then migrate; a database that cannot be reached is a `CommandError`."""
    engine = make_engine(settings.database_url)
    try:
        try:
            await ping(engine)
        except Exception as exc:  # any driver, network or file failure: say which, in a line
            shown = make_url(settings.database_url).render_as_string(hide_password=True)
            raise CommandError(f"cannot reach the database {shown}: {_reason(exc)}") from exc
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


def _reason(exc: BaseException) -> str:
    """A driver's own message, first line only (SQLAlchemy's wrapper adds SQL and a link)."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


def keep_secret_key(settings: Settings) -> None:
    """The signing key, made and kept now if need be: a folder it cannot be kept in is a
    `CommandError` (the commands that sign or hash need it; `migrate` does not)."""
    try:
        settings.resolved_secret_key()
    except OSError as exc:
        cause = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        raise CommandError(
            f"cannot keep a secret key in {DATA_DIR / 'secret_key'} ({cause}): "
            "set CHATQL_SECRET_KEY, or run where that folder can be written"
        ) from exc


def cmd_migrate(settings: Settings, _: argparse.Namespace) -> int:
    asyncio.run(migrate(settings))
    print("database is at the newest revision")
    return 0


NO_ADMIN_PASSWORD = (
    "no password: set CHATQL_ADMIN_PASSWORD, or run create-admin at a terminal to be asked"
)
PASSWORDS_DIFFER = "the two passwords differ"


def admin_password(settings: Settings) -> str:
    """`CHATQL_ADMIN_PASSWORD`, else asked for twice at the terminal (without echo)."""
    if settings.admin_password:
        return settings.admin_password
    if not sys.stdin.isatty():
        raise CommandError(NO_ADMIN_PASSWORD, status=2)
    try:
        password = getpass.getpass("Password: ")
        again = getpass.getpass("Password again: ")
    except EOFError:
        raise CommandError(NO_ADMIN_PASSWORD, status=2) from None
    if password != again:
        raise CommandError(PASSWORDS_DIFFER, status=2)
    return password


async def _create_admin(settings: Settings, username: str, email: str, password: str) -> None:
    from db import users as user_data
    from schema.validation import password_problem, raise_for

    raise_for({"password": password_problem(password)})
    await migrate(settings)
    passwords = Passwords.from_config(settings.schema_config())
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await user_data.create_user(
                session,
                username=username,
                email=email,
                hashed_password=await passwords.hash(password),
                full_name=None,
                is_admin=True,
            )
    finally:
        await engine.dispose()


def cmd_create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from db.errors import Conflict
    from schema.errors import BadUserInput
    from schema.validation import email_problem, raise_for, username_problem

    try:
        # The names first: a typo in them is not worth typing a password twice.
        raise_for({"username": username_problem(args.username), "email": email_problem(args.email)})
        password = admin_password(settings)
        keep_secret_key(settings)
        asyncio.run(_create_admin(settings, args.username, args.email, password))
    except BadUserInput as exc:
        raise CommandError(str(exc), status=2) from exc
    except Conflict as exc:
        raise CommandError(str(exc)) from exc
    print(f"admin {args.username} created")
    return 0


async def _seed(settings: Settings, args: argparse.Namespace, progress: RowProgress) -> SeedCounts:
    from db.seed import SeedPlan, seed

    await migrate(settings)
    plan = SeedPlan(
        users=args.users,
        conversations_per_user=args.conversations_per_user,
        messages_per_conversation=args.messages_per_conversation,
        mean_length=args.mean_length,
        seed=args.seed,
    )
    passwords = Passwords.from_config(settings.schema_config())
    engine = make_engine(settings.database_url)
    try:
        return await seed(
            engine,
            plan=plan,
            hashed_password=await passwords.hash(args.password),
            reset=args.reset,
            progress=progress.update,
        )
    finally:
        progress.close()
        await engine.dispose()


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from db.seed import NotEmpty
    from ops.progress import RowProgress
    from schema.validation import password_problem

    problem = password_problem(args.password)
    if problem:
        raise CommandError(f"--password {problem}", status=2)
    sizes = {
        "--users": args.users,
        "--conversations-per-user": args.conversations_per_user,
        "--messages-per-conversation": args.messages_per_conversation,
        "--mean-length": args.mean_length,
    }
    negative = [f"{option} must not be negative" for option, size in sizes.items() if size < 0]
    if negative:
        raise CommandError("; ".join(negative), status=2)
    keep_secret_key(settings)
    progress = RowProgress(sys.stderr)
    try:
        counts = asyncio.run(_seed(settings, args, progress))
    except NotEmpty as exc:
        raise CommandError(str(exc)) from exc
    seconds = progress.writing_seconds
    rows = counts.users + counts.conversations + counts.messages
    rate = f"{rows / seconds:,.0f}" if seconds else "-"
    print(
        f"seeded {counts.users:,} users, {counts.conversations:,} conversations and "
        f"{counts.messages:,} messages in {seconds:.2f} s ({rate} rows/s); "
        f"log in as user1..user{counts.users} with password {args.password!r} (user1 is an admin)"
    )
    return 0


async def _trust(
    settings: Settings, args: argparse.Namespace, operations: list[Operation] | None
) -> str:
    from schema.trusted import load_manifest, retire

    done = []
    await migrate(settings)
    engine = make_engine(settings.database_url)
    try:
        sessionmaker = make_sessionmaker(engine)
        if operations is not None:
            name = args.name or Path(args.file).stem
            await load_manifest(sessionmaker, name=name, operations=operations)
            done.append(f"manifest {name!r} loaded: {len(operations)} operations")
        for name in args.retire:
            if not await retire(sessionmaker, name=name):
                raise CommandError(f"no manifest named {name!r}")
            done.append(f"manifest {name!r} retired")
    finally:
        await engine.dispose()
    return "; ".join(done)


def cmd_trust(settings: Settings, args: argparse.Namespace) -> int:
    """Load a manifest (checked whole before the database is touched), retire others."""
    from schema.trusted import ManifestError, parse_manifest

    if args.file is None and not args.retire:
        raise CommandError("give a manifest FILE, or --retire NAME", status=2)
    operations = None
    try:
        if args.file is not None:
            operations = parse_manifest(Path(args.file).read_text(encoding="utf-8"))
        print(asyncio.run(_trust(settings, args, operations)))
    except (ManifestError, OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.file}: {exc}", status=2) from exc
    return 0


async def _import(
    settings: Settings,
    username: str,
    conversations: Iterable[ImportedConversation],
    progress: RowProgress,
    total: int,
) -> tuple[Importer, int]:
    """Store `conversations` for `username` in one transaction (all or nothing); the
    importer's counts and how many conversations had branches."""
    from db.engine import write_transaction
    from db.imports import Importer
    from db.users import users_by_usernames

    await migrate(settings)
    engine = make_engine(settings.database_url)
    branched = 0
    try:
        async with write_transaction(make_sessionmaker(engine)) as session:
            found = await users_by_usernames(session, usernames=[username])
            if username not in found:
                raise CommandError(f"no user named {username!r}", status=2)
            importer = Importer(session, owner_id=found[username].id)
            for conversation in conversations:
                await importer.add(conversation)
                branched += conversation.branched
                progress.update("conversations", importer.conversations, total)
            await importer.finish()
    finally:
        progress.close()
        await engine.dispose()
    return importer, branched


def _run_import(
    settings: Settings,
    args: argparse.Namespace,
    conversations: Iterable[ImportedConversation],
    total: int,
) -> tuple[Importer, int]:
    from ops.progress import RowProgress
    from schema.imports import BrokenFile

    keep_secret_key(settings)
    progress = RowProgress(sys.stderr)
    try:
        return asyncio.run(_import(settings, args.user, conversations, progress, total))
    except BrokenFile as exc:
        raise CommandError(f"{args.file}: {exc}; nothing was imported", status=2) from exc


def _stored(importer: Importer, args: argparse.Namespace) -> str:
    return (
        f"imported {importer.conversations:,} conversations and {importer.messages:,} "
        f"messages from {args.file} for {args.user}"
    )


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """chatql's own export (NDJSON), read a line at a time, into `--user`'s account."""
    from schema.imports import chatql_lines

    try:
        with Path(args.file).open(encoding="utf-8") as lines:
            total = sum(1 for line in lines if line.strip())
        with Path(args.file).open(encoding="utf-8") as lines:
            importer, _ = _run_import(settings, args, chatql_lines(lines), total)
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.file}: {exc}; nothing was imported", status=2) from exc
    print(_stored(importer, args))
    return 0


def cmd_import_chatgpt(settings: Settings, args: argparse.Namespace) -> int:
    """A ChatGPT data export's conversations.json into `--user`'s account: every branch, the
    current path the active one (`schema.imports`)."""
    import json
    from datetime import UTC, datetime

    from schema.imports import TOO_DEEP, chatgpt_conversations

    try:
        data = json.loads(Path(args.file).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{args.file}: not JSON at line {exc.lineno} column {exc.colno} (character "
            f"{exc.pos}): {exc.msg}; nothing was imported",
            status=2,
        ) from exc
    except RecursionError:
        raise CommandError(
            f"{args.file}: not JSON: {TOO_DEEP}; nothing was imported", status=2
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"{args.file}: {exc}; nothing was imported", status=2) from exc
    total = len(data) if isinstance(data, list) else 0
    conversations = chatgpt_conversations(data, now=datetime.now(UTC))
    importer, branched = _run_import(settings, args, conversations, total)
    done = _stored(importer, args)
    if branched:
        done += (
            f"; {branched:,} conversations had branches: every branch was imported, the "
            "current path of each is its active branch"
        )
    print(done)
    return 0


def cmd_export_schema(_: Settings, __: argparse.Namespace) -> int:
    print(make_schema().as_str())
    return 0
