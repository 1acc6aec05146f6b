"""The package as a user gets it from ``pip install .`` (not editable): the ``costroute``
command and every subcommand's ``--help`` work without the repository's ``tests/``, and
``costroute bench``, whose suite is not installed, says so and exits 2 instead of failing
on an import.

Fast and offline on a fresh CI machine: the package is built from a copy of its sources
(so no ``build/`` or ``*.egg-info`` lands in the checkout) without build isolation,
using the setuptools of this virtualenv (the ``test`` extra pins one new enough), into a
fresh venv made ``--without-pip``; pip is this venv's, pointed at it with ``--python``,
and ``--no-deps --no-index`` keeps the index out. The runtime dependencies come from
this venv's site-packages through a ``.pth`` line: paths listed in a ``.pth`` file are
not scanned for ``.pth`` files themselves, so this venv's editable-install hook for
costroute does not apply there and ``proxy`` is the copy installed in the fresh venv,
which the test checks. About 5 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from proxy.cli.main import build_parser

REPO = Path(__file__).resolve().parents[2]
# What a source distribution of the package needs (pyproject.toml's readme is README.md).
SOURCES = ("pyproject.toml", "README.md", "proxy", "adapters")


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "src"
    source.mkdir()
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, source / name)
    venv = tmp / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp, env
    )
    assert purelib.returncode == 0, purelib.stderr
    deps = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(purelib.stdout.strip(), "_costroute_test_deps.pth").write_text(
        "\n".join(sorted(deps)) + "\n"
    )
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    done = _run([*pip, "--no-deps", "--no-index", "--no-build-isolation", str(source)], tmp, env)
    assert done.returncode == 0, done.stdout + done.stderr
    # Run from a directory with no checkout above it (pytest's temporary directory).
    outside = tmp / "elsewhere"
    outside.mkdir()
    return venv, outside, env


def test_the_installed_package_is_not_the_checkout(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    venv, outside, env = installed
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import proxy; print(proxy.__file__)"], outside, env
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(REPO)


def _subcommands() -> list[str]:
    actions = build_parser()._actions
    return sorted(
        name for a in actions if isinstance(a, argparse._SubParsersAction) for name in a.choices
    )


def test_costroute_help_works_from_a_non_editable_install(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    venv, outside, env = installed
    costroute = str(venv / "bin" / "costroute")
    top = _run([costroute, "--help"], outside, env)
    assert top.returncode == 0, top.stderr
    commands = _subcommands()
    assert {"serve", "bench", "demo", "emulate"} <= set(commands)
    for name in commands:
        assert name in top.stdout
        one = _run([costroute, name, "--help"], outside, env)
        assert one.returncode == 0, f"costroute {name} --help: {one.stderr}"
        assert one.stdout.startswith(f"usage: costroute {name}"), one.stdout


def test_costroute_bench_says_the_suite_needs_a_checkout(
    installed: tuple[Path, Path, dict[str, str]],
) -> None:
    venv, outside, env = installed
    costroute = str(venv / "bin" / "costroute")
    helped = _run([costroute, "bench", "--help"], outside, env)
    assert helped.returncode == 0, helped.stderr
    assert "not installed with the package" in " ".join(helped.stdout.split())
    ran = _run([costroute, "bench", "--quick"], outside, env)
    assert ran.returncode == 2
    assert "Traceback" not in ran.stderr, ran.stderr
    assert "not part of the installed package" in ran.stderr
    assert str(outside) in ran.stderr
    assert "costroute bench --repo" in ran.stderr
    # Pointed at the checkout, it finds the suite there (the options are checked, the
    # suite is not run: an unknown option makes it stop at its own argument parsing).
    pointed = _run(
        [costroute, "bench", "--repo", str(REPO), "--", "--no-such-option"], outside, env
    )
    assert "not part of the installed package" not in pointed.stderr
    assert "--no-such-option" in pointed.stderr
