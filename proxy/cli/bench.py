"""``costroute bench``: the benchmark suite, ``python -m tests.benchmarks``.

The suite lives in the repository's ``tests/benchmarks`` and is not installed with the
package (it is a large harness of emulators, load generators and profilers that serves
development, not deployments), so this command runs it from a source checkout: the
current directory (or a parent) or ``--repo``. From an install without one it says so and
exits 2 rather than failing on an import. The common options are declared here; anything
else goes after ``--`` (``costroute bench --quick -- --duration 3``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

SUITE = Path("tests") / "benchmarks" / "__main__.py"
# Options passed through to the suite as given: (flag, takes a value).
_PASSED = (("--quick", False), ("--parts", True), ("--repeats", True), ("--out", True),
           ("--write-results", True), ("--candidate", True))  # fmt: skip


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench",
        help="run the benchmark suite from a source checkout (python -m tests.benchmarks)",
        description="Run `python -m tests.benchmarks` in a costroute source checkout: real-time "
        "overhead against a floor passthrough and the upstream, enqueue rate, flush and ingest "
        "of a 50,000-line batch, memory. Prints one table of targets. The suite is not "
        "installed with the package: run this inside a checkout of the costroute repository "
        "(or pass --repo PATH) with its test extras installed (pip install -e '.[test]').",
    )
    p.add_argument("--repo", default=".", help="the checkout to run from (default: . or a parent)")
    p.add_argument("--quick", action="store_true", help="one short repeat (a smoke run)")
    p.add_argument("--parts", help="realtime,variant,memory,enqueue,batch,profile (default: all)")
    p.add_argument("--repeats", help="repeats per configuration (default 3)")
    p.add_argument("--out", help="directory for logs, profiles and results.json")
    p.add_argument("--write-results", metavar="PATH", help="also write the figures as markdown")
    p.add_argument("--candidate", metavar="PATH", help="another checkout to measure side by side")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more suite options")
    p.set_defaults(func=run)


def suite_argv(args: argparse.Namespace) -> list[str]:
    argv: list[str] = []
    for flag, takes_value in _PASSED:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if takes_value and value is not None:
            argv += [flag, str(value)]
        elif not takes_value and value:
            argv.append(flag)
    extra = list(args.extra or [])
    return argv + (extra[1:] if extra[:1] == ["--"] else extra)


def run(args: argparse.Namespace) -> int:
    repo = find_repo(Path(args.repo))
    if repo is None:
        print(
            f"costroute bench: the benchmark suite is not part of the installed package; it "
            f"lives in {SUITE.parent}/ of a costroute source checkout, and there is none in "
            f"{Path(args.repo).resolve()} or its parents.\n"
            "Run it from a checkout (cd costroute && pip install -e '.[test]' && costroute "
            "bench) or point at one: costroute bench --repo PATH/TO/costroute",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, "-m", "tests.benchmarks", *suite_argv(args)], cwd=repo)


def find_repo(start: Path) -> Path | None:
    here = start.resolve()
    for directory in (here, *here.parents):
        if (directory / SUITE).is_file():
            return directory
    return None
