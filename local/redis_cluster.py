"""A private Redis Cluster on loopback ports (tests, benchmarks, trying it): redis-server processes in
cluster mode joined by `redis-cli --cluster create`, 3 primaries and a replica each by default."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisError

from embedq.local.redis_server import LocalServiceError, RedisServer

BUS_PORT_OFFSET = 10_000  # a cluster node also listens on its port + 10,000 (the cluster bus)
HIGHEST_PORT = 65_535 - BUS_PORT_OFFSET


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_ports(count: int) -> list[int]:
    """`count` ports whose bus ports (+10,000) are free too, below 55,536."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, HIGHEST_PORT)
        if port not in ports and _port_is_free(port) and _port_is_free(port + BUS_PORT_OFFSET):
            ports.append(port)
    return ports


class RedisCluster:
    """`primaries` primaries with `replicas` replicas each, keeping nothing on disk; `extra_args` go to
    every node (TLS, ACL files)."""

    def __init__(self, primaries: int = 3, replicas: int = 1, *extra_args: str, node_timeout_ms: int = 2000):
        if shutil.which("redis-cli") is None:
            raise LocalServiceError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        self.primaries, self.replicas = primaries, replicas
        cluster_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
        cluster_args += ["--cluster-config-file", "nodes.conf", *extra_args]
        self.nodes = [RedisServer(port, *cluster_args) for port in free_cluster_ports(primaries * (1 + replicas))]

    @property
    def url(self) -> str:
        """One node's URL: a Cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            created = subprocess.run(
                ["redis-cli", "--cluster", "create", *addresses, *replicas],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if created.returncode != 0:
                raise LocalServiceError(f"redis-cli --cluster create failed: {created.stdout[-500:]}{created.stderr}")
            self.wait_until_ok(timeout)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_until_ok(self, timeout: float = 60.0) -> None:
        """Until every node says cluster_state:ok and knows every other node."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(node) for node in self.nodes if node.process is not None) and self._settled():
                return
            time.sleep(0.1)
        raise LocalServiceError(f"the Redis Cluster on ports {self.ports} did not settle within {timeout:g} s")

    def _ok(self, node: RedisServer) -> bool:
        try:
            with Redis(port=node.port, socket_timeout=1) as client:
                info = client.cluster("info")
        except (RedisError, OSError):  # not answering yet, or still meeting the others
            return False
        return bool(info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(self.nodes))

    def _settled(self) -> bool:
        """Every live node online in its shard, and as many primaries as asked."""
        try:
            roles = self.roles()
        except (RedisError, OSError):
            return False
        live = sum(node.process is not None for node in self.nodes)
        return len(roles) == live and list(roles.values()).count("master") == self.primaries

    def roles(self) -> dict[int, str]:
        """Each online node's port and role (master or replica), as the first live node sees them."""
        first = next(node for node in self.nodes if node.process is not None)
        with Redis(port=first.port, socket_timeout=1) as client:
            shards = client.execute_command("CLUSTER", "SHARDS")
        return {  # redis-py gives each shard as a dict, its keys as bytes
            int(node[b"port"]): node[b"role"].decode()
            for shard in shards
            for node in shard[b"nodes"]
            if node[b"health"] == b"online"
        }

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def primary_of(self, key: str) -> int:
        """The port of the primary that owns `key`'s hash slot now."""
        slot = key_slot(key.encode())
        with Redis(port=self.nodes[0].port, socket_timeout=1) as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(primary[1])
        raise LocalServiceError(f"slot {slot} is not covered")

    def primary_ports(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        return sorted(port for port, role in self.roles().items() if role == "master")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
