"""costroute under uvicorn for the benchmarks, configured as in production: a client key
(auth on), planning, the routing log on a SQLite file, and the same uvicorn options as
``costroute serve``. Two providers point at the fake upstream: ``instant`` answers at
once, ``slow`` (the upstream's ``/slow`` prefix) after 50 ms.

    python -m tests.benchmarks.costroute_server --port 9300 --upstream URL --db PATH

``--db`` may be a ``postgresql://`` URL: the store is then PostgreSQL (``[store] url_env``
names ``BENCH_DATABASE_URL``, which ``environ_for`` sets).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from proxy.settings import Settings, parse_settings

CLIENT_KEY = "sk-bench-client-0123456789abcdef"
PROVIDER_KEY = "sk-bench-provider-0123456789"
ENV = {"BENCH_CLIENT_KEY": CLIENT_KEY, "BENCH_PROVIDER_KEY": PROVIDER_KEY}
MODELS = {"instant": "bench-instant", "slow": "bench-slow"}


def environ_for(db: str) -> dict[str, str]:
    """The environment a benchmark proxy on store ``db`` reads its secrets from."""
    return {**ENV, "BENCH_DATABASE_URL": db} if db.startswith("postgresql://") else dict(ENV)


def bench_settings(upstream: str, db_path: str, **sections: dict[str, Any]) -> Settings:
    provider = {"type": "openai", "api_key_env": "BENCH_PROVIDER_KEY"}
    store: dict[str, Any] = {"path": db_path}
    if db_path.startswith("postgresql://"):
        store = {"url_env": "BENCH_DATABASE_URL"}
    data: dict[str, Any] = {
        "store": store,
        "auth": {"keys": [{"name": "bench", "key_env": "BENCH_CLIENT_KEY"}]},
        "providers": {
            "instant": {**provider, "base_url": upstream + "/v1"},
            "slow": {**provider, "base_url": upstream + "/slow/v1"},
        },
        "models": {
            MODELS["instant"]: {"provider": "instant", "upstream_model": "gpt-4o-mini"},
            MODELS["slow"]: {"provider": "slow", "upstream_model": "gpt-4o-mini"},
        },
        # Deferred requests must be able to reach the batch lane (enqueue benchmark).
        "batch": {"min_tolerance": "1h", "flush_interval": "1h", "max_wait": "24h"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse_settings(data, source="benchmark")


def main() -> None:
    import uvicorn

    from proxy.app import create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--loop", default="uvloop")
    parser.add_argument("--http", default="httptools")
    args = parser.parse_args()
    # As `costroute serve` does: the proxy's loggers at INFO, httpx's per-call line off.
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = bench_settings(args.upstream, args.db)
    app = create_app(settings, environ=environ_for(args.db), tune_gc=True)  # as `serve`
    http: Any = args.http
    if args.http == "httptools":
        # What `costroute serve` runs: httptools behind the header deadline and size guard.
        from proxy.api.server_protocol import server_protocol

        server = settings.server
        http = server_protocol(float(server.client_timeout), server.max_header_bytes)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=http,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        h11_max_incomplete_event_size=64 * 1024,
    )


if __name__ == "__main__":
    main()
