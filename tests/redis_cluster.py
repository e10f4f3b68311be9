"""A real local Redis Cluster for tests: 3 masters and 3 replicas of Debian's redis-server (7.x) on
free loopback ports, created with ``redis-cli --cluster create`` and torn down after the run."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis.asyncio as aioredis

from tests.helpers import free_port
from tests.redis_versions import redis7_binary
from tradebot.common.bus import Bus
from tradebot.common.bus.connection import RECOVERABLE_REDIS_ERRORS, connect
from tradebot.common.bus.publishing import Commit, CommitResult

MASTERS = 3
# Tests name a cluster by its URL with this suffix, so one string reaches worker processes too.
CLUSTER_MARK = "#cluster"
READY_TIMEOUT_S = 30.0


@dataclass
class ClusterNode:
    port: int
    bus_port: int  # the cluster bus (by default port + 10000, which a free high port may not allow)
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    binary: str = ""

    def start(self, binary: str) -> None:
        self.binary = binary
        self.folder.mkdir(parents=True, exist_ok=True)
        options = {
            "port": self.port,
            "bind": "127.0.0.1",
            "cluster-enabled": "yes",
            "cluster-port": self.bus_port,
            "cluster-config-file": self.folder / "nodes.conf",
            "cluster-node-timeout": 1000,  # a killed master is failed over within seconds
            "dir": self.folder,
            "appendonly": "yes",
            "appendfsync": "always",  # a killed node keeps every acknowledged write
            "save": "",
            "daemonize": "no",
            "protected-mode": "no",
        }
        self.process = subprocess.Popen(
            [binary, *(part for name, value in options.items() for part in (f"--{name}", str(value)))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def kill(self) -> None:
        """kill -9, as a crashed host would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Start a killed node again on its data and cluster config (it rejoins as a replica)."""
        self.start(self.binary)

    def pause(self) -> None:
        """SIGSTOP: the node answers nobody (a hung host) until :meth:`resume`."""
        if self.process:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            os.killpg(self.process.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, decode_responses=True, socket_timeout=5)


@dataclass
class LocalCluster:
    """Six nodes; ``url`` names the first (the cluster client discovers the others)."""

    folder: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0{CLUSTER_MARK}"

    def start(self) -> None:
        binary = redis7_binary()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        self.nodes = [ClusterNode(free_port(), free_port(), self.folder / f"node{i}") for i in range(2 * MASTERS)]
        for node in self.nodes:
            node.start(binary)
        for node in self.nodes:
            self._wait(lambda node=node: node.client().ping(), f"node {node.port} to answer")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        self._wait(self.ready, "cluster_state:ok with every slot served and every replica in sync")

    def ready(self) -> bool:
        """Every live node says cluster_state:ok, and 3 masters each have a connected replica."""
        live = self.live()
        try:
            if any(node.client().cluster("info")["cluster_state"] != "ok" for node in live):
                return False
            masters = [node for node in live if node.client().info("replication")["role"] == "master"]
            return len(masters) == MASTERS and all(
                int(node.client().info("replication")["connected_slaves"]) >= 1 for node in masters
            )
        except redis.RedisError:
            return False

    def master_of(self, key: str) -> ClusterNode:
        """The node serving ``key``'s slot right now."""
        client = self.live()[0].client()
        slot = client.cluster("keyslot", key)
        for start, end, primary, *_ in client.cluster("slots"):
            if int(start) <= slot <= int(end):
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise LookupError(f"no master serves {key}")

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """A live replica of ``master``."""
        for node in self.live():
            info = node.client().info("replication")
            if info["role"] == "slave" and int(info["master_port"]) == master.port:
                return node
        raise LookupError(f"no replica of {master.port}")

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.process and node.process.poll() is None]

    def flush(self) -> None:
        for node in self.live():
            if node.client().info("replication")["role"] == "master":
                node.client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    @staticmethod
    def _wait(condition: object, what: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                if condition():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"local Redis Cluster: timed out after {READY_TIMEOUT_S}s waiting for {what}")
            time.sleep(0.05)


def connect_to(url: str) -> aioredis.Redis:
    """The bus client for a test URL: the cluster client for a URL marked with CLUSTER_MARK."""
    return connect(url.removesuffix(CLUSTER_MARK), cluster=url.endswith(CLUSTER_MARK))


async def commit_until_counted(bus: Bus, commit: Commit) -> None:
    """A producer's retry loop: the commit again until it counts. A retry of one that landed finds
    the guard moved on (STALE, after its barrier and WAIT) and the cursor holding its own value."""
    assert commit.guard is not None
    for _ in range(200):
        try:
            result = await bus.commit("", commit)
            if result is CommitResult.APPLIED or await bus.redis.get(commit.guard[0]) == commit.state[commit.guard[0]]:
                return
        except RECOVERABLE_REDIS_ERRORS:
            await asyncio.sleep(0.1)  # backoff of the producer's retry loop, not a wait on a condition
    raise AssertionError("the commit never counted")
