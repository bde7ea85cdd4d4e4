"""A secured Redis as an operator runs one (issue 13's case 10), on private redis-servers with certificates
and ACL users these tests make: a password, TLS, mutual TLS and the README's ACL recipe each carry jobs;
refused credentials and failed handshakes are named as such (a setting to fix, not an outage); a TLS
Redis Cluster carries jobs for the same ACL user; no
password shows in logs, stats or process arguments; no pickle on the path."""

import os
import signal
import subprocess
from pathlib import Path

import pytest
from redis import Redis

from embedq import EmbedClient
from embedq.errors import RedisAuthFailed, RedisTLSFailed
from embedq.local.redis_cluster import ClusterTLS, RedisCluster
from embedq.local.redis_server import RedisServer, free_port
from embedq.local.service import LocalService
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT, embedq_command, settings_env
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]

PASSWORD = "s3cret-Pa55word-for-tests"
ACL_RECIPE = "on >{password} ~rq:* ~embedq:* &rq:* +@all -@dangerous +info"  # README's, word for word


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def signed(directory: Path, name: str, ca: str, san: str | None = None) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    openssl(
        "req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"
    )
    extra = []
    if san:
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        extra = ["-extfile", str(directory / f"{name}.ext")]
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(directory / f"{ca}.crt"), "-CAkey", str(directory / f"{ca}.key"),
        "-CAcreateserial", "-out", str(cert), "-days", "2", *extra,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        openssl(
            "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(directory / f"{ca}.key"),
            "-out", str(directory / f"{ca}.crt"), "-days", "2", "-subj", f"/CN=embedq test {ca}",
        )  # fmt: skip
    signed(directory, "server", "ca", san="IP:127.0.0.1")
    signed(directory, "client", "ca")
    return directory


def tls_redis(certs: Path, mutual: bool) -> RedisServer:
    port = free_port()
    return RedisServer(
        port,
        "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "yes" if mutual else "no",
    ).start()  # fmt: skip


def fifty_jobs(settings, tmp_path: Path) -> str:
    """50 jobs through 2 real workers on `settings`' Redis; the supervisor's log."""
    with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
        batches = [[f"secured job {i} text {j}" for j in range(3)] for i in range(50)]
        results = service.client.wait_many(service.client.submit_many(batches), timeout=120)
        assert [len(result.embeddings) for result in results] == [3] * 50
        assert service.stop() == 0
        return service.output()


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tls_carries_jobs_and_a_failed_handshake_is_named(certs, model_dir, tmp_path, mutual):
    server = tls_redis(certs, mutual)
    try:
        base = f"rediss://127.0.0.1:{server.port}/0"
        client_cert = f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}" if mutual else ""
        fifty_jobs(make_settings(f"{base}?ssl_ca_certs={certs / 'ca.crt'}{client_cert}", model_dir), tmp_path)
        wrong_ca = make_settings(f"{base}?ssl_ca_certs={certs / 'other-ca.crt'}{client_cert}", model_dir)
        with EmbedClient(settings=wrong_ca) as client, pytest.raises(RedisTLSFailed, match="TLS handshake"):
            client.submit(["not verified"])
        if mutual:
            no_client_cert = make_settings(f"{base}?ssl_ca_certs={certs / 'ca.crt'}", model_dir)
            with EmbedClient(settings=no_client_cert) as client, pytest.raises(RedisTLSFailed):
                client.submit(["no client certificate"])
    finally:
        server.cleanup()


def test_the_readmes_acl_user_runs_the_fleet_and_no_password_shows(model_dir, tmp_path):
    server = RedisServer().start()
    try:
        admin = Redis.from_url(server.url)
        admin.execute_command("ACL", "SETUSER", "embedq", *ACL_RECIPE.format(password=PASSWORD).split())
        settings = make_settings(f"redis://embedq:{PASSWORD}@127.0.0.1:{server.port}/0", model_dir)
        with LocalService(settings, workers=2, log_path=tmp_path / "supervisor.log") as service:
            job_ids = service.client.submit_many([[f"acl job {i}"] for i in range(50)])
            victim = int(service.live_workers()[0]["pid"])
            os.kill(victim, signal.SIGKILL)  # the hand-back path runs under the ACL too
            assert len(service.client.wait_many(job_ids, timeout=120)) == 50
            service.wait_for_workers(2, exclude_pids=frozenset({str(victim)}))
            for pid in (service.supervisor.pid, *(int(w["pid"]) for w in service.live_workers())):
                assert PASSWORD.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            stats = subprocess.run(
                embedq_command("stats"), env=settings_env(service.settings), capture_output=True, text=True
            )
            assert stats.returncode == 0 and PASSWORD not in stats.stdout + stats.stderr
            assert service.stop() == 0
            assert PASSWORD not in service.output()
        assert admin.execute_command("ACL", "LOG") == [], "a command the recipe does not allow was refused"

        wrong = make_settings(f"redis://embedq:wrong-{PASSWORD}@127.0.0.1:{server.port}/0", model_dir)
        with EmbedClient(settings=wrong) as client, pytest.raises(RedisAuthFailed, match="refused the credentials"):
            client.submit(["wrong password"])
        worker = subprocess.run(
            embedq_command("worker"), env=settings_env(wrong), capture_output=True, text=True, timeout=120
        )
        assert worker.returncode == CONFIG_ERROR_EXIT and "RedisAuthFailed" in worker.stderr
        assert PASSWORD not in worker.stderr
    finally:
        server.cleanup()


def serve_one_job(url: str, model_dir: Path, tmp_path: Path) -> None:
    with LocalService(make_settings(url, model_dir), workers=1, log_path=tmp_path / "supervisor.log") as service:
        assert service.client.embed(["through an authenticated connection"], timeout=30).shape == (1, 384)
        assert service.live_workers()[0]["providers"] == "CPUExecutionProvider"
        assert service.stop() == 0, service.output()


@pytest.fixture
def server():
    servers = []

    def start(*args: str, port: int | None = None) -> RedisServer:
        servers.append(RedisServer(port, *args).start())
        return servers[-1]

    yield start
    for running in servers:
        running.cleanup()


def test_a_password_in_the_url_is_honoured_and_never_printed(server, model_dir, tmp_path):
    redis = server("--requirepass", "s3cret-pw")
    serve_one_job(f"redis://:s3cret-pw@127.0.0.1:{redis.port}/0", model_dir, tmp_path)
    wrong = EmbedClient(settings=make_settings(f"redis://:wrong-pw@127.0.0.1:{redis.port}/0", model_dir))
    with pytest.raises(RedisAuthFailed) as error:  # a setting to fix, not an outage
        wrong.submit(["refused"])
    assert "wrong-pw" not in str(error.value) and "***" in str(error.value)


def test_no_pickle_anywhere_on_the_path():
    sources = [p for package in ("producer", "worker", "config") for p in (ROOT / package).rglob("*.py")]
    # the live gadget in test_hostile_payloads.py proves the worker refuses pickles; this keeps the code free of them
    assert sources
    assert not [str(p) for p in sources if "import pickle" in p.read_text() or "pickle.loads" in p.read_text()]


def test_a_tls_cluster_carries_jobs_for_the_readmes_acl_user(certs, model_dir, tmp_path):
    tls = ClusterTLS(certs / "ca.crt", certs / "server.crt", certs / "server.key")
    cluster = RedisCluster(3, 0, tls=tls).start()
    try:
        for port in cluster.ports:  # a Cluster's nodes each keep their own users: the recipe goes to every one
            with cluster.admin(port) as admin:
                admin.execute_command("ACL", "SETUSER", "embedq", *ACL_RECIPE.format(password=PASSWORD).split())
        url = cluster.url.replace("rediss://", f"rediss://embedq:{PASSWORD}@")
        output = fifty_jobs(make_settings(url, model_dir, redis_cluster=True, queue_shards=3), tmp_path)
        assert PASSWORD not in output and "CROSSSLOT" not in output
        for port in cluster.ports:
            with cluster.admin(port) as admin:
                assert admin.execute_command("ACL", "LOG") == [], f"node {port} refused a command the recipe forbids"
        wrong = make_settings(url.replace(PASSWORD, "wrong"), model_dir, redis_cluster=True)
        with pytest.raises(RedisAuthFailed, match="refused the credentials"):  # at once: it reads the slot map
            EmbedClient(settings=wrong)
    finally:
        cluster.cleanup()
