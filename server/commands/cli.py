"""The ``pledgeql`` command line (API.md section 4)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable, Sequence

from server.settings import Settings

# A development token lives at most a year.
MAX_TOKEN_TTL = 365 * 24 * 3600


def _fail(message: str) -> int:
    print(f"pledgeql: {message}", file=sys.stderr)
    return 2


def _urls(settings: Settings):  # type: ignore[no-untyped-def]
    from server.db import server_urls

    return server_urls(settings)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from server.commands.migrate import run_migrate

    run_migrate(_urls(settings))
    print("Migrations applied.")
    return 0


def cmd_seed(settings: Settings, args: argparse.Namespace) -> int:
    from server.commands.migrate import migrate
    from server.commands.seed import seed_demo

    if not args.demo:
        return _fail("say which data set to seed: --demo")
    urls = _urls(settings)

    async def run() -> None:
        await migrate(urls)
        summary = await seed_demo(urls.owner, args.students)
        if summary.created:
            print(
                f"Seeded {summary.districts} districts, {summary.schools} schools, {summary.students} students, "
                f"{summary.responses} responses in {summary.seconds:.1f}s."
            )
        else:
            print("The demo data is already there; nothing to do.")

    asyncio.run(run())
    return 0


async def _find_user(owner_url: str, username: str) -> uuid.UUID | None:
    from server.db import connect

    conn = await connect(owner_url)
    try:
        value = await conn.fetchval(
            "SELECT id FROM users WHERE username = $1 UNION ALL SELECT id FROM platform_users WHERE username = $1 "
            "LIMIT 1",
            username,
        )
        return value if isinstance(value, uuid.UUID) else None
    finally:
        await conn.close()


def cmd_token(settings: Settings, args: argparse.Namespace) -> int:
    from permissions.enums import Purpose
    from server.auth import mint_token

    if settings.is_production:
        return _fail("token minting is off in production; tokens come from your identity provider")
    if not 1 <= args.ttl <= MAX_TOKEN_TTL:
        return _fail(f"--ttl takes the token's lifetime in seconds, 1 to {MAX_TOKEN_TTL:,} (a year)")
    purposes = [p.strip() for p in args.purposes.split(",") if p.strip()]
    unknown = [p for p in purposes if p not in Purpose.__members__]
    if unknown:
        return _fail(f"unknown purposes {', '.join(unknown)}; choose from {', '.join(Purpose.__members__)}")
    if not purposes:
        # A token with none could declare no purpose: every request it made would be refused.
        return _fail(f"--purposes needs at least one purpose; choose from {', '.join(Purpose.__members__)}")
    if args.user_id:
        try:
            user_id = uuid.UUID(args.user_id)
        except ValueError:
            return _fail("--user-id must be a UUID")
    else:
        found = asyncio.run(_find_user(_urls(settings).owner, args.username))
        if found is None:
            return _fail(f"no user named {args.username!r}; run 'pledgeql seed --demo' for the demo accounts")
        user_id = found
    print(mint_token(settings, user_id, purposes, args.ttl))
    return 0


def cmd_schema(settings: Settings, args: argparse.Namespace) -> int:
    from permissions.policy import load_policy_set
    from schema.build import build_schema

    print(build_schema(load_policy_set(settings.policy_dirs)).as_str())
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from server.commands.migrate import migrate

    if args.workers < 1:
        return _fail("--workers takes 1 or more")

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
    logging.getLogger("pledgeql").addHandler(handler)
    logging.getLogger("pledgeql").setLevel(logging.INFO)
    urls = _urls(settings)
    watch = None
    if not settings.database_url:
        from server.db import EmbeddedWatch

        # This process started the embedded PostgreSQL and owns it: it starts it again if it dies.
        watch = EmbeddedWatch(settings.data_dir).start()
    # The workers connect with these URLs rather than each attaching to the
    # embedded server: only this process registers with it (and stops it), so
    # a worker that dies, even by SIGKILL, leaves nothing registered behind.
    os.environ.setdefault("PLEDGEQL_DATABASE_URL", urls.owner)
    os.environ.setdefault("PLEDGEQL_APP_DATABASE_URL", urls.app)

    async def prepare() -> str | None:
        await migrate(urls)
        if not args.demo:
            return None
        from server.commands.seed import seed_demo

        if (await seed_demo(urls.owner)).created and watch is not None:
            # A crash of the embedded server replays the WAL since its last checkpoint: not the seed's.
            from server.db import connect

            conn = await connect(urls.owner)
            try:
                await conn.execute("CHECKPOINT")
            finally:
                await conn.close()
        return "teacher1@northwind.example"

    demo_user = asyncio.run(prepare())
    # Secrets generated into the data dir are made here, once, before any worker starts.
    settings.audit_key()
    if not settings.is_production:
        settings.development_jwt_secret()
    # Every worker builds its app from this configuration (server/asgi.py): built once here
    # first, a mistake in it (CORS, the operations folder, PLEDGEQL_LIVE_*, keys) stops the
    # start with its message said once, not once per worker start until the crash-loop guard.
    from server.app import create_app
    from server.telemetry import Telemetry

    create_app(settings, telemetry=Telemetry())
    from server.workers import cannot_listen, listen

    # Bound before the banner: a port in use is said instead of an address that is not this server's.
    try:
        sockets = listen(args.host, args.port, args.workers)
    except OSError as error:
        if watch is not None:
            watch.stop()
        return _fail(cannot_listen(args.host, args.port, error))
    port = sockets[0].getsockname()[1] if sockets else args.port
    url = f"http://{args.host}:{port}/graphql"
    print(f"pledgeql serving at {url}  (privacy notice: http://{args.host}:{port}/privacy)")
    if demo_user and not settings.is_production:
        from server.auth import mint_token

        user_id = asyncio.run(_find_user(urls.owner, demo_user))
        if user_id is not None:
            token = mint_token(
                settings, user_id, ["INSTRUCTION", "REPORTING", "PERSONALIZATION", "COMMUNICATION"], 8 * 3600
            )
            print(f"\nA token for {demo_user} (valid 8 hours):\n{token}\n")
            # GraphiQL (each worker builds its app from this environment) starts signed in.
            os.environ["PLEDGEQL_GRAPHIQL_TOKEN"] = token
            print(
                f"Try:\n  curl -s {url} -H 'Content-Type: application/json' -H 'X-Purpose: INSTRUCTION' \\\n"
                f"    -H 'Authorization: Bearer {token}' -d '{{\"query\": \"{{ me {{ role }} }}\"}}'\n",
                flush=True,
            )
    # The database is up and migrated once, here; each worker process builds
    # its app from the same environment (server/asgi.py), finding the same
    # database (the embedded one this process started, or the configured URL).
    try:
        return _serve(args, sockets)
    finally:
        if watch is not None:
            watch.stop()


def _serve(args: argparse.Namespace, sockets: list[socket.socket] | None) -> int:
    from server.read_guard import GuardedHttpToolsProtocol
    from server.workers import serve

    return serve(
        "server.asgi:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        sockets=sockets,
        # Imported once by the fork server: a replacement worker starts in a fraction of a second.
        preload=("server.app",),
        # uvicorn's httptools protocol with header and body read timeouts and a connection cap.
        http=GuardedHttpToolsProtocol,
        log_level="info",
        # No access log: each line would carry a client's address. Requests are
        # counted and traced by telemetry, which records no address.
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=20,
    )


def _command(module: str) -> Callable[[Settings, argparse.Namespace], int]:
    """A subcommand implemented in its own module, imported only when run."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        result: int = importlib.import_module(module).command(settings, args)
        return result

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pledgeql", description="A GraphQL backend that keeps a privacy policy in code."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate, then serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="seed the demo data first when the database is empty")
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)

    seed = sub.add_parser("seed", help="load the deterministic demo data set")
    seed.add_argument("--demo", action="store_true")
    seed.add_argument("--students", type=int, default=None)
    seed.set_defaults(func=cmd_seed)

    token = sub.add_parser("token", help="print a signed development token")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--username")
    who.add_argument("--user-id")
    token.add_argument("--purposes", required=True, help="comma-separated Purpose values")
    token.add_argument("--ttl", type=int, default=3600, help="seconds")
    token.set_defaults(func=cmd_token)

    sub.add_parser("schema", help="print the GraphQL SDL").set_defaults(func=cmd_schema)

    audit = sub.add_parser("audit", help="audit trail tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="verify the audit hash chains")
    verify.add_argument("--district")
    verify.add_argument(
        "--heads", help="a file outside the database: check the chains still reach the heads it holds, then update it"
    )
    verify.set_defaults(func=_command("server.commands.audit_cli"))

    retention = sub.add_parser("retention", help="retention tools")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    run = retention_sub.add_parser("run")
    run.add_argument("--dry-run", action="store_true")
    run.set_defaults(func=_command("server.commands.retention"))

    roster = sub.add_parser("roster", help="OneRoster import")
    roster_sub = roster.add_subparsers(dest="roster_command", required=True)
    imp = roster_sub.add_parser("import")
    imp.add_argument("path")
    imp.add_argument("--district", required=True)
    imp.add_argument("--dry-run", action="store_true")
    imp.set_defaults(func=_command("server.commands.roster"))

    export = sub.add_parser("export", help="a district's complete data export")
    export.add_argument("--district", required=True)
    export.add_argument("--out", required=True)
    export.add_argument(
        "--delete-after", action="store_true", help="then delete the district's data and print a deletion certificate"
    )
    export.set_defaults(func=_command("server.commands.export"))

    operations = sub.add_parser("operations", help="persisted operations tools")
    operations_sub = operations.add_subparsers(dest="operations_command", required=True)
    check = operations_sub.add_parser(
        "check", help="validate a folder of client operations as the server would; print name, hash and cost"
    )
    check.add_argument("dir")
    check.set_defaults(func=_command("server.commands.operations_cli"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    try:
        result: int = args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
