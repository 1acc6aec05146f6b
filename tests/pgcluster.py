"""A throwaway PostgreSQL cluster for the tests, from Debian's ``postgresql`` package.

``initdb`` and ``pg_ctl`` refuse to run as root, and CI runs as root: the cluster then
runs as the ``postgres`` user the package creates (``runuser``), in a temporary directory
it owns. It listens on a Unix socket in that directory only (no TCP port to clash with
another run) and trusts local connections.

    python -m tests.pgcluster start DIR   # prints the URL; the cluster keeps running
    python -m tests.pgcluster stop DIR

``.ci/run`` starts one for the whole suite and exports ``COSTROUTE_TEST_DATABASE_URL``;
without it, ``tests/conftest.py`` starts its own for the session when the binaries exist.
``fsync`` stays on unless ``fast=True``: the drill kills processes, not the server, but a
test of durability should not be measured on a server that skips it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

DATABASE = "costroute"


def bindir() -> Path | None:
    """The newest installed server's binaries, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version)
    if found:
        return Path(found[-1]).parent
    which = shutil.which("pg_ctl")
    return Path(which).resolve().parent if which else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.parent.name)
    except ValueError:
        return 0


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError(
            "running as root, and there is no 'postgres' user to run the server"
        ) from None
    return ["runuser", "-u", "postgres", "--", *argv]


def url_for(directory: Path) -> str:
    return f"postgresql://postgres@/{DATABASE}?host={directory / 'sock'}"


def start(directory: Path, *, fast: bool = False, preload: tuple[str, ...] = ()) -> str:
    """initdb + start in ``directory`` (created); returns the URL of database ``costroute``."""
    binaries = bindir()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    directory.mkdir(parents=True, exist_ok=True)
    data, sock = directory / "data", directory / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (directory, sock):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        os.chmod(directory, 0o755)
        # The user must reach the directory through its parents: a private temporary
        # directory (0700, root's) gets search permission for others, nothing more.
        for parent in directory.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, (mode & 0o7777) | 0o111)
    _run(
        _as_owner(
            [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "--no-sync", "-E", "UTF8", "--locale=C"]
        ),
    )  # fmt: skip
    options = [
        f"-k {sock}",
        "-c listen_addresses=''",
        "-c max_connections=200",
        "-c shared_buffers=64MB",
    ]
    if preload:
        options.append(f"-c shared_preload_libraries={','.join(preload)}")
    if fast:
        options += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
    _run(
        _as_owner(
            [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(directory / "server.log"),
             "-o", " ".join(options), "-w", "-t", "60", "start"]
        ),
    )  # fmt: skip
    _run(_as_owner([str(binaries / "createdb"), "-h", str(sock), "-U", "postgres", DATABASE]))
    return url_for(directory)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        output = done.stdout.decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {output}")


def stop(directory: Path) -> None:
    binaries = bindir()
    data = directory / "data"
    if binaries is None or not (data / "postmaster.pid").exists():
        return
    subprocess.run(
        _as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pgcluster start|stop DIR", file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if argv[0] == "start":
        print(start(directory))
    else:
        stop(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
