"""``costroute`` / ``python -m proxy``: the command line.

Each command lives in the module that owns its subject and registers itself through
``add_parser(subparsers)``; this module only assembles them and runs the chosen one.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from proxy.cli.format import format_routes
from proxy.durations import DurationError, parse_duration
from proxy.settings import ConfigError, Settings, load_settings, resolve_client_keys

log = logging.getLogger("costroute")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(getattr(args, "log_level", "info")).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per upstream call is noise at INFO; our own routing log records every call.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return int(result or 0)
    except ConfigError as exc:
        print(f"costroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costroute",
        description="Cost-routing proxy for LLM APIs (OpenAI-compatible).",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_serve(sub)
    _add_check_config(sub)
    _add_migrate(sub)
    _add_logs(sub)
    _add_emulate(sub)
    for module in _command_modules():
        module.add_parser(sub)
    return parser


def _command_modules() -> list[Any]:
    from proxy.cli import bench as bench_cli
    from proxy.cli import demo
    from proxy.cli import flush as flush_cli
    from proxy.cli import simulate as simulate_cli
    from proxy.costs import estimate, reports

    return [bench_cli, demo, estimate, flush_cli, reports, simulate_cli]


# --- serve ---------------------------------------------------------------------------


def _add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the proxy")
    p.add_argument("--config", required=True, help="path to the TOML config")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.api.server_protocol import server_protocol
    from proxy.app import create_app

    settings = load_settings(args.config)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    if not settings.auth.keys:
        if not is_loopback(host) and not settings.server.allow_unauthenticated:
            raise ConfigError(
                f"auth.keys: no client keys are configured and the server would listen on {host}; "
                "configure [[auth.keys]] (or bind to 127.0.0.1)"
            )
        log.warning("no client keys configured: every caller is accepted (loopback only)")
    app = create_app(settings, tune_gc=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=False,
        timeout_keep_alive=30,
        http=server_protocol(
            float(settings.server.client_timeout), settings.server.max_header_bytes
        ),
        loop="auto",  # uvloop when installed
        h11_max_incomplete_event_size=settings.server.max_header_bytes,
    )
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- check-config ----------------------------------------------------------------------


def _add_check_config(sub: Any) -> None:
    p = sub.add_parser("check-config", help="validate a config file and its environment")
    p.add_argument("--config", required=True)
    p.set_defaults(func=_check_config)


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    resolve_client_keys(settings)
    _print_summary(settings)
    if settings.store.url_env is not None:
        # Several replicas share this database: prove it is reachable, and say what it is.
        print(f"  store: {asyncio.run(_store_version(settings))}")
        if settings.files.dir is None:
            # File records are shared through the database, their bytes are not.
            folder = settings.files.folder(settings.store)
            print(
                f"  note: [files] dir is not set: uploaded files and Batch API results go "
                f"to {folder} on this replica's own disk; with several replicas, set it to "
                "storage they all share"
            )
    return 0


async def _store_version(settings: Settings) -> str:
    from proxy.store.postgres import PgDatabase

    url = settings.store.target()
    try:
        return await PgDatabase.version_of(url)
    except Exception as exc:  # any driver or network error: the message says which
        raise ConfigError(f"store.url_env: cannot connect to the database: {exc}") from None


# --- migrate ---------------------------------------------------------------------------


def _add_migrate(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply pending database migrations (serve applies them too, under a lock)",
    )
    p.add_argument("--config", required=True)
    p.set_defaults(func=_migrate)


async def _migrate(args: argparse.Namespace) -> int:
    from proxy.store.db import Database

    settings = load_settings(args.config)
    db = await Database.open(settings.store.target(), pool_size=2)
    try:
        applied = await db.fetchall("SELECT name FROM _migrations ORDER BY name")
        print(await db.server_version())
        print(f"schema up to date: {len(applied)} migrations applied, last {applied[-1][0]}")
    finally:
        await db.close()
    return 0


def _print_summary(settings: Settings) -> None:
    from adapters.registry import capabilities

    print(
        f"config OK: {len(settings.providers)} providers, {len(settings.models)} models, "
        f"{len(settings.auth.keys)} client keys"
    )
    for name, model in settings.models.items():
        provider = settings.providers[model.provider]
        lanes = ["realtime"]
        can = capabilities(provider.type)
        if model.flex and can.flex:
            lanes.append("flex")
        if model.batch and can.batch:
            lanes.append("batch")
        if provider.price_windows:
            lanes.append("offpeak")
        if can.context_cache:
            lanes.append("context cache")
        upstream = f" -> {model.upstream_model}" if model.upstream_model else ""
        print(f"  {name}{upstream} via {model.provider} ({provider.type}): {', '.join(lanes)}")


# --- logs ------------------------------------------------------------------------------


def _add_logs(sub: Any) -> None:
    p = sub.add_parser("logs", help="print the routing log")
    p.add_argument("--config", required=True)
    p.add_argument("--since", default="1h", help="how far back (e.g. 15m, 1h, 7d)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_logs)


async def _logs(args: argparse.Namespace) -> int:
    import time

    from proxy.store.db import Database
    from proxy.store.routes import recent_routes

    settings = load_settings(args.config)
    try:
        since = parse_duration(args.since)
    except DurationError as exc:
        raise ConfigError(f"--since: {exc}") from None
    db = await Database.open(settings.store.target(), pool_size=2)
    try:
        rows = await recent_routes(db, since_ms=int((time.time() - since) * 1000), limit=args.limit)
    finally:
        await db.close()
    rows.reverse()
    if args.json:
        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
    else:
        print(format_routes(rows))
    return 0


# --- emulate ---------------------------------------------------------------------------


def _add_emulate(sub: Any) -> None:
    p = sub.add_parser("emulate", help="run a provider emulator standalone")
    p.add_argument("kind", choices=["openai", "deepseek", "gemini", "anthropic"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.set_defaults(func=_emulate)


async def _emulate(args: argparse.Namespace) -> int:
    from adapters.emulators.run import serve

    await serve(args.kind, args.host, args.port)
    return 0
