"""The image runs every role: installed as the Dockerfile installs it, nothing dev-only is needed.

A fresh venv gets requirements.txt without the embedded servers (the Dockerfile's own filter) and
the package without its dependencies, as the image does; no development packages (pytest, schemathesis,
pyyaml ...). In it, the `tradebot` command answers --help, every compose service's module and every
worker role imports, and `tradebot bench` says what to set instead of a traceback.
The development venv has every package, so tests run there could never see a missing one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deployment import DOCKERFILE, ROOT, command_module, load_compose, tradebot_services
from tradebot.roles import ROLES

# What the Dockerfile leaves out of requirements.txt (its `grep -v -E '^(...)=='`).
IMAGE_FILTER = re.compile(r"grep -v -E '\^\((?P<names>[\w|-]+)\)=='")
DEV_ONLY = ("pytest", "yaml", "ruff", "mypy", "schemathesis", "playwright")
INSTALL_TIMEOUT_S = 600
pytestmark = pytest.mark.timeout(INSTALL_TIMEOUT_S * 2)  # the first test waits for the venv


def image_requirements() -> list[str]:
    """requirements.txt as the Dockerfile filters it."""
    found = IMAGE_FILTER.search(DOCKERFILE.read_text())
    assert found, "the Dockerfile no longer filters requirements.txt the way this test reads it"
    left_out = tuple(f"{name}==" for name in found["names"].split("|"))
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith(("#", *left_out))]


@pytest.fixture(scope="module")
def image_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv installed like the image: the filtered requirements, then the package with --no-deps."""
    folder = tmp_path_factory.mktemp("image-venv")
    requirements = folder / "requirements-image.txt"
    requirements.write_text("\n".join(image_requirements()) + "\n")
    source = folder / "app"  # what the Dockerfile copies (pip would write build files into the checkout)
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tradebot", source / "tradebot", ignore=shutil.ignore_patterns("__pycache__"))
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    for args in (["-r", str(requirements)], ["--no-deps", str(source)]):
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    return python


def run(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command of the venv, from an empty folder (the checkout must not be importable)."""
    return subprocess.run(
        [str(python), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=python.parent,
        env={"PATH": "", "HOME": str(python.parent)},
    )


def test_the_venv_has_no_dev_only_package(image_python: Path) -> None:
    probe = "import importlib.util, sys; print([m for m in sys.argv[1:] if importlib.util.find_spec(m)])"
    result = run(image_python, "-c", probe, *DEV_ONLY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # else this test would prove nothing


@pytest.mark.parametrize(
    "command",
    [[], ["up"], ["worker"], ["migrate"], ["servers"], ["symbols"], ["backfill"]],
    ids=lambda command: " ".join(command) or "tradebot",
)
def test_every_tradebot_command_answers_help(image_python: Path, command: list[str]) -> None:
    result = run(image_python.parent / "tradebot", *command, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage: tradebot" in result.stdout


def test_every_role_and_compose_service_module_imports(image_python: Path) -> None:
    services = tradebot_services(load_compose())
    modules = sorted(
        {*ROLES.values(), "tradebot.healthcheck", *(command_module(s["command"]) for s in services.values())}
    )
    code = "import importlib, sys\nfor module in sys.argv[1:]:\n    importlib.import_module(module)"
    result = run(image_python, "-c", code, *modules)
    assert result.returncode == 0, result.stderr


def test_bench_without_servers_says_what_to_set(image_python: Path) -> None:
    # the image has neither the embedded servers nor a REDIS_URL: one line, exit 78, no traceback
    result = run(image_python.parent / "tradebot", "bench", "--quick")
    assert result.returncode == 78
    assert "set REDIS_URL and DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
