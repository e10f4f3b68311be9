"""The deployment files read the way docker compose and VS Code read them, for tests.

No Docker engine runs in the test environment, so tests take docker-compose.yml apart themselves:
``${VAR:-default}`` interpolation from a .env file (env.example stands in for it), each service's
environment (``env_file`` then ``environment``), and its command as a local process.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml
from dotenv import dotenv_values

from tradebot.roles import ROLES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / "env.example"
LAUNCH_JSON = ROOT / ".vscode" / "launch.json"
TASKS_JSON = ROOT / ".vscode" / "tasks.json"
TRADEBOT_IMAGE = "tradebot:local"

# $$, ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}
_INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<name>\w+)(?:(?P<operator>:?[-?])(?P<argument>[^}]*))?\})")


class InterpolationError(ValueError):
    """A ``${NAME:?message}`` whose variable is unset, as docker compose would report it."""


def load_compose() -> dict:
    """docker-compose.yml as data (YAML anchors and ``<<`` merges resolved)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def dotenv(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The variables a .env file sets (commented lines set nothing)."""
    return {name: value or "" for name, value in dotenv_values(path).items()}


def interpolate(value: object, variables: dict[str, str]) -> object:
    """``value`` with compose's ``${...}`` forms resolved against ``variables`` (recursively)."""
    if isinstance(value, dict):
        return {key: interpolate(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, variables) for item in value]
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, operator, argument = match["name"], match["operator"] or "", match["argument"] or ""
        given = variables.get(name)
        missing = given is None or (operator.startswith(":") and given == "")
        if not missing:
            return given or ""
        if operator.endswith("?"):
            raise InterpolationError(f"{name}: {argument}")
        return argument if operator.endswith("-") else ""

    return _INTERPOLATION.sub(resolve, value)


def tradebot_services(compose: dict) -> dict[str, dict]:
    """Services that run the tradebot image (every role, migrate, backfill)."""
    return {name: service for name, service in compose["services"].items() if service.get("image") == TRADEBOT_IMAGE}


def in_default_profile(service: dict) -> bool:
    """True if a plain ``docker compose up`` starts the service."""
    return not service.get("profiles")


def service_environment(service: dict, env_file: dict[str, str]) -> dict[str, str]:
    """A container's environment: the .env file (``env_file``), then ``environment`` on top."""
    environment = dict(env_file) if service.get("env_file") else {}
    declared = service.get("environment") or {}
    if isinstance(declared, list):
        declared = dict(item.split("=", 1) for item in declared)
    resolved = interpolate(declared, env_file)
    environment.update({name: str(value) for name, value in resolved.items()})  # type: ignore[union-attr]
    return environment


def command_module(command: list[str]) -> str:
    """The Python module a service command runs (``tradebot worker X`` runs X's module)."""
    if command[:2] == ["tradebot", "worker"]:
        return ROLES[command[2]]
    if command[0] == "tradebot":
        return "tradebot.cli"
    if command[:2] == ["python", "-m"]:
        return command[2]
    raise ValueError(f"not a tradebot command: {command}")


def local_argv(command: list[str]) -> list[str]:
    """A service command as a local process: the image's ``tradebot`` script is ``tradebot.cli``."""
    if command[0] == "tradebot":
        return [sys.executable, "-m", "tradebot.cli", *command[1:]]
    if command[0] == "python":
        return [sys.executable, *command[1:]]
    raise ValueError(f"not a tradebot command: {command}")


def load_json(path: Path) -> dict:
    """launch.json / tasks.json (kept strict JSON, so no comment stripping is needed)."""
    return json.loads(path.read_text())
