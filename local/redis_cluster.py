"""A private Redis Cluster on loopback ports (tests, benchmarks, trying it: `./dev cluster`): redis-server
processes in cluster mode joined by `redis-cli --cluster create`, 3 primaries and a replica each by default."""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class ClusterTLS:
    """Certificates for a Cluster that speaks only TLS, to its clients and on its bus (no client certificates
    asked): the server's certificate and key, and the CA that signed it."""

    ca: Path
    cert: Path
    key: Path

    def node_args(self, port: int) -> list[str]:
        files = ["--tls-cert-file", str(self.cert), "--tls-key-file", str(self.key), "--tls-ca-cert-file", str(self.ca)]
        tls = ["--tls-cluster", "yes", "--tls-replication", "yes", "--tls-auth-clients", "no"]
        return ["--port", "0", "--tls-port", str(port), *tls, *files]


class RedisCluster:
    """`primaries` primaries with `replicas` replicas each, keeping nothing on disk; with `tls`, TLS only."""

    def __init__(
        self, primaries: int = 3, replicas: int = 1, *, tls: ClusterTLS | None = None, node_timeout_ms: int = 2000
    ):
        if shutil.which("redis-cli") is None:
            raise LocalServiceError("redis-cli is not installed (Debian: apt-get install redis-tools)")
        self.primaries, self.replicas, self.tls = primaries, replicas, tls
        cluster_args = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(node_timeout_ms)]
        cluster_args += ["--cluster-config-file", "nodes.conf"]
        self.nodes = [
            RedisServer(port, *cluster_args, *(tls.node_args(port) if tls else []))
            for port in free_cluster_ports(primaries * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        """One node's URL: a Cluster client finds the others from it."""
        if self.tls is None:
            return self.nodes[0].url
        return f"rediss://127.0.0.1:{self.nodes[0].port}/0?ssl_ca_certs={self.tls.ca}"

    def admin(self, port: int) -> Redis:
        """A plain client of the node on `port` (TLS when the Cluster speaks it)."""
        if self.tls is None:
            return Redis("127.0.0.1", port, socket_timeout=1)
        return Redis("127.0.0.1", port, socket_timeout=1, ssl=True, ssl_ca_certs=str(self.tls.ca))

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        tls = ["--tls", "--cacert", str(self.tls.ca)] if self.tls else []
        return subprocess.run(["redis-cli", *tls, *args], capture_output=True, text=True, timeout=timeout)

    def start(self, timeout: float = 60.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
            replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
            created = self._cli("--cluster", "create", *addresses, *replicas, timeout=timeout)
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
            with self.admin(node.port) as client:
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
        with self.admin(self.live_port) as client:
            shards = client.execute_command("CLUSTER", "SHARDS")
        return {  # redis-py gives each shard as a dict, its keys as bytes (tls-port for a TLS node)
            int(node.get(b"port") or node[b"tls-port"]): node[b"role"].decode()
            for shard in shards
            for node in shard[b"nodes"]
            if node[b"health"] == b"online"
        }

    @property
    def live_port(self) -> int:
        """The port of the first node not killed."""
        return next(node.port for node in self.nodes if node.process is not None)

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def primary_of(self, key: str) -> int:
        """The port of the primary that owns `key`'s hash slot now."""
        slot = key_slot(key.encode())
        for start, end, port in self._slot_ranges():
            if start <= slot <= end:
                return port
        raise LocalServiceError(f"slot {slot} is not covered")

    def _slot_ranges(self) -> list[tuple[int, int, int]]:
        """The slot ranges and the port of the primary owning each, as a live node sees them (CLUSTER SLOTS)."""
        with self.admin(self.live_port) as client:
            return [
                (start, end, int(primary[1])) for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS")
            ]

    def node_id(self, port: int) -> str:
        with self.admin(port) as client:
            return str(client.execute_command("CLUSTER", "MYID").decode())

    def move_slots(self, source: int, target: int, count: int, timeout: float = 300.0) -> None:
        """Migrate `count` of the slots of primary `source` (a port) with their keys to primary `target`, as
        an operator does: `redis-cli --cluster reshard`."""
        route = ["--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target)]
        moved = self._cli(
            "--cluster",
            "reshard",
            f"127.0.0.1:{source}",
            *route,
            "--cluster-slots",
            str(count),
            "--cluster-yes",
            timeout=timeout,
        )
        if moved.returncode != 0:
            raise LocalServiceError(f"redis-cli --cluster reshard failed: {moved.stdout[-500:]}{moved.stderr}")

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`: what it had not yet sent its replica is lost."""
        node = next(node for node in self.nodes if node.port == port)
        if node.process is not None:
            node.process.kill()
            node.process.wait(timeout=10)
            node.process = None

    def slot_count(self, port: int) -> int:
        """How many slots the primary on `port` owns now."""
        return sum(end - start + 1 for start, end, owner in self._slot_ranges() if owner == port)

    def primary_ports(self) -> list[int]:
        """The ports of the nodes that are primaries now."""
        return sorted(port for port, role in self.roles().items() if role == "master")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()


def main() -> int:
    """`./dev cluster`: a local Redis Cluster to try embedq on, until Ctrl-C (it keeps nothing on disk)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--primaries", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stopped either way, its nodes go with it
    cluster = RedisCluster(args.primaries, args.replicas)
    try:
        cluster.start()
        print(
            f"a Redis Cluster of {args.primaries} primaries with {args.replicas} replica(s) each on ports "
            f"{', '.join(map(str, cluster.ports))}. In another shell:\n\n"
            f"  export EMBEDQ_REDIS_URL={cluster.url} EMBEDQ_REDIS_CLUSTER=true EMBEDQ_QUEUE_SHARDS={args.primaries}\n"
            "  .venv/bin/embedq supervise    # then: .venv/bin/embedq serve, embed, stats\n\nCtrl-C stops it.",
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    sys.exit(main())
