"""The command line: `parser()` and `main(argv)`, run by `python server.py`.

With no command, or options alone, the command is `serve`. Settings that do not validate are
one `error:` line each, naming the variable, and exit status 2.
"""

from __future__ import annotations

import argparse
import logging.config
import sys
from typing import Any

from pydantic import ValidationError

from app.commands import (
    CommandError,
    cmd_create_admin,
    cmd_export_schema,
    cmd_import,
    cmd_import_chatgpt,
    cmd_migrate,
    cmd_seed,
    cmd_trust,
)
from app.serve import cmd_serve
from app.settings import Settings

DEMO_PASSWORD = "chatql-demo"


HELP_EPILOG = """\
settings come from environment variables: DATABASE_URL (default: SQLite in ./data/chatql.db)
and CHATQL_* (see README.md, "Settings").

examples:
  python server.py                                   serve on 127.0.0.1:8000
  python server.py serve --port 9000 --reload        develop: restart when code changes
  DATABASE_URL=postgresql+asyncpg://u:p@db/chatql python server.py serve --workers 4
  python server.py export-schema > schema.graphql    regenerate the committed schema
"""


def _command(commands: Any, name: str, summary: str, details: str) -> argparse.ArgumentParser:
    command: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=f"{summary[0].upper()}{summary[1:]}. {details}",
    )
    return command


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return port


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python server.py",
        description="chatql, a GraphQL API server for chat apps. With no command: serve.",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = main.add_subparsers(dest="command", metavar="COMMAND")

    serve = _command(
        commands,
        "serve",
        "migrate, then serve the API (the default)",
        "The API and the GraphiQL explorer are at /graphql (HTTP and WebSocket); "
        "/healthz, /readyz and /metrics are for operators. Logs go to stdout, one JSON "
        "object a line unless stdout is a terminal (CHATQL_LOG_FORMAT).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; above 1 needs PostgreSQL, and metrics are then "
        "merged through PROMETHEUS_MULTIPROC_DIR, a temporary folder unless set)",
    )
    serve.add_argument(
        "--reload",
        action="store_true",
        help="development: restart when a .py file changes (one worker)",
    )
    serve.set_defaults(handler=cmd_serve)

    migrate = _command(
        commands,
        "migrate",
        "bring the database to the newest revision",
        "Runs the Alembic migrations in db/migrations; serve does this on start too.",
    )
    migrate.set_defaults(handler=cmd_migrate)

    admin = _command(
        commands,
        "create-admin",
        "create an admin account",
        "The password comes from CHATQL_ADMIN_PASSWORD, else is asked for twice at a "
        "terminal. Exits 2 on invalid input or no password, and 1 when the username or email "
        "is taken.",
    )
    admin.add_argument("username", help="3-50 letters, digits, '_', '.', '-'")
    admin.add_argument("email", help="the account's email address")
    admin.set_defaults(handler=cmd_create_admin)

    seed = commands.add_parser(
        "seed",
        help="write a demo data set in bulk (users user1..userN; user1 is an admin)",
        description="Write a demo data set in bulk: users user1..userN (user1 an admin), each "
        "with conversations of user and assistant messages of varied length. Needs a database "
        "with no users, unless --reset.",
    )
    seed.add_argument("--users", type=int, default=100, help="number of users (default 100)")
    seed.add_argument(
        "--conversations-per-user", type=int, default=20, help="conversations each (default 20)"
    )
    seed.add_argument(
        "--messages-per-conversation", type=int, default=50, help="messages each (default 50)"
    )
    seed.add_argument(
        "--mean-length", type=int, default=200, help="average message length (default 200)"
    )
    seed.add_argument(
        "--password",
        default=DEMO_PASSWORD,
        help=f"password of every seeded user (default {DEMO_PASSWORD!r})",
    )
    seed.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    seed.add_argument(
        "--reset", action="store_true", help="delete every user, conversation and message first"
    )
    seed.set_defaults(handler=cmd_seed)

    trust = _command(
        commands,
        "trust",
        "load a manifest of trusted documents, or retire one",
        "FILE is Apollo's persisted-query manifest (generate-persisted-query-manifest) or "
        "Relay's --persist-output JSON; it replaces a manifest of the same name. Every server "
        "process sees the change within a second; CHATQL_TRUSTED_DOCUMENTS says what they do "
        "with it (off, audit, enforce).",
    )
    trust.add_argument("file", nargs="?", metavar="FILE", help="the manifest (JSON)")
    trust.add_argument("--name", help="the manifest's name (default: FILE's name, no suffix)")
    trust.add_argument(
        "--retire",
        action="append",
        default=[],
        metavar="NAME",
        help="delete the manifest NAME (may be repeated; after loading FILE)",
    )
    trust.set_defaults(handler=cmd_trust)

    imported = _command(
        commands,
        "import",
        "import chatql's own export (GET /export, NDJSON) into an account",
        "Every conversation and message of FILE is stored for --user, with new ids, in one "
        "transaction: a file that breaks a rule stores nothing and the error names its line. "
        "Exits 2 on a broken file or an unknown user.",
    )
    imported.add_argument("file", metavar="FILE", help="the export (NDJSON)")
    imported.add_argument("--user", required=True, metavar="USERNAME", help="the owner")
    imported.set_defaults(handler=cmd_import)

    chatgpt = _command(
        commands,
        "import-chatgpt",
        "import a ChatGPT data export's conversations.json into an account",
        "Of a conversation with branches the current path is imported (the others are left "
        "out, and the output says how many had them); tool messages and messages with no text "
        "are skipped. One transaction: a file that breaks a rule stores nothing and the error "
        "names the conversation, the node and the field (or the JSON position). Exits 2 on a "
        "broken file or an unknown user.",
    )
    chatgpt.add_argument("file", metavar="FILE", help="conversations.json")
    chatgpt.add_argument("--user", required=True, metavar="USERNAME", help="the owner")
    chatgpt.set_defaults(handler=cmd_import_chatgpt)

    export = _command(
        commands,
        "export-schema",
        "print the GraphQL SDL",
        "The committed schema.graphql is this output: "
        "python server.py export-schema > schema.graphql",
    )
    export.set_defaults(handler=cmd_export_schema)
    return main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command, or options alone, is `serve`; an unknown word is argparse's "invalid choice".
    if not argv or (argv[0].startswith("-") and argv[0] not in {"-h", "--help"}):
        argv.insert(0, "serve")
    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"error: {_setting_problem(error)}", file=sys.stderr)
        return 2
    logging.config.dictConfig(settings.log_config(stderr=args.command != "serve"))
    handler: Any = args.handler
    try:
        return int(handler(settings, args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _setting_problem(error: Any) -> str:
    """One line naming the variable a setting came from and what is wrong with it."""
    name = str(error["loc"][0]) if error["loc"] else "?"
    variable = f"CHATQL_{name.upper()}" if name in Settings.model_fields else name
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{variable}: {message}"
