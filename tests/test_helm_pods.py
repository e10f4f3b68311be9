"""The chart's pods, run as processes: each Deployment's command, with exactly the environment the
chart gives its container (ConfigMap + Secret + env), starts and passes its own probe command.

No kubelet here: the processes share this host's network, so two settings differ from a pod's.
API_HOST is 127.0.0.1 (no server of a test binds beyond loopback) and the API port is a free one;
the workers get a port where nothing listens, as in their own pod's network, where the API is not.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis

from tests.helm import helm_or_skip, render_chart
from tests.helpers import free_port, wait_until
from tradebot.common.db import drop_database, recreate_database
from tradebot.common.embedded import EmbeddedRedis
from tradebot.common.streams import heartbeat_key

BIN = Path(sys.executable).parent  # `tradebot` and `python`, as on the image's PATH
TOKEN = "pod-test-token"


def pod_environment(container: dict[str, Any], config: dict[str, str], secret: dict[str, str]) -> dict[str, str]:
    """What the kubelet would set: envFrom (ConfigMap, then Secret), then the container's env."""
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/tmp")}
    sources = {"configMapRef": config, "secretRef": secret}
    for source in container["envFrom"]:
        (kind,) = source
        env.update(sources[kind])
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


@pytest.fixture
def chart_pods(private_redis: EmbeddedRedis, database_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    name = f"helm_pods_{os.getpid()}"
    dsn = asyncio.run(recreate_database(database_url, name))
    manifests = render_chart(
        helm_or_skip(),
        *("--set", f"redis.url={private_redis.url}", "--set", f"database.url={dsn}"),
        *("--set-string", f"secrets.values.API_TOKEN={TOKEN}", "--set", "config.MOCK_TICKS_PER_SECOND=50"),
    )
    yield {"manifests": manifests, "dsn": dsn, "redis": private_redis.url, "data": tmp_path}
    asyncio.run(drop_database(database_url, name))


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(300)  # above its own waits' deadlines, which bound a hang on a loaded machine
async def test_every_deployment_starts_and_passes_its_probe(chart_pods: dict[str, Any]) -> None:
    manifests, data = chart_pods["manifests"], chart_pods["data"]
    (config,) = [m["data"] for m in manifests if m["kind"] == "ConfigMap"]
    (secret,) = [m["stringData"] for m in manifests if m["kind"] == "Secret"]
    (job,) = [m for m in manifests if m["kind"] == "Job"]

    def environment(manifest: dict[str, Any], api_port: int) -> tuple[list[str], dict[str, str]]:
        (spec,) = manifest["spec"]["template"]["spec"]["containers"]
        env = pod_environment(spec, config, secret)
        env.update(API_HOST="127.0.0.1", API_PORT=str(api_port), DATA_DIR=str(data / manifest["metadata"]["name"]))
        return spec["command"], env

    command, env = environment(job, free_port())
    migrated = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    conn = await asyncpg.connect(chart_pods["dsn"])
    try:
        assert await conn.fetchval("SELECT to_regclass('ticks') IS NOT NULL")
    finally:
        await conn.close()

    deployments = [m for m in manifests if m["kind"] == "Deployment"]
    api_port, nothing_there = free_port(), free_port()
    pods: dict[str, tuple[subprocess.Popen[bytes], list[str], dict[str, str]]] = {}
    client = redis.Redis.from_url(chart_pods["redis"])
    try:
        for manifest in deployments:
            role = manifest["metadata"]["labels"]["app.kubernetes.io/component"].replace("-", "_")
            command, env = environment(manifest, api_port if role == "api" else nothing_there)
            (spec,) = manifest["spec"]["template"]["spec"]["containers"]
            probe = spec["readinessProbe"]["exec"]["command"]
            pods[role] = (_start(command, env, data / f"{role}.log"), probe, env)

        def heartbeats() -> set[str]:
            return {key.decode().split(":")[1] for key in client.scan_iter(match=heartbeat_key("*", "*"))}

        # Every role's own process beats (the probe of one worker would pass on another's beat).
        workers = set(pods) - {"api"}
        try:
            await wait_until(lambda: workers <= heartbeats(), timeout=90, what=f"heartbeats of {workers}")
        except AssertionError as error:
            logs = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in sorted(data.glob("*.log")))
            raise AssertionError(f"{error}\n{logs}") from None
        for role, (process, probe, env) in pods.items():
            assert process.poll() is None, (data / f"{role}.log").read_text()[-3000:]

            async def healthy(probe: list[str] = probe, env: dict[str, str] = env) -> bool:
                result = await asyncio.to_thread(subprocess.run, probe, env=env, capture_output=True, timeout=30)
                return result.returncode == 0

            await wait_until(healthy, timeout=90, what=f"the {role} probe")
    finally:
        client.close()
        for process, _, _ in pods.values():
            process.terminate()
        for role, (process, _, _) in pods.items():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                pytest.fail(f"{role} outlived the chart's terminationGracePeriodSeconds (30 s) after SIGTERM")
