"""Redis with a password, with an ACL user (least privilege), and over TLS; no pickle on the path."""

import subprocess
from pathlib import Path

import pytest

from embedq import EmbedClient, QueueUnavailable
from embedq.worker.local.redis_server import RedisServer, free_port
from embedq.worker.local.service import LocalService
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
# What embedq needs and no more: its own keys and rq's, rq's pubsub channels, no admin commands.
ACL_USER = "embedq on >worker-pw ~rq:* ~embedq:* &rq:* +@all -@dangerous"


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
    with pytest.raises(QueueUnavailable) as error:
        wrong.submit(["refused"])
    assert "wrong-pw" not in str(error.value) and "***" in str(error.value)


def test_an_acl_user_with_least_privilege_works(server, model_dir, tmp_path):
    redis = server("--user", "default", "off", "--user", *ACL_USER.split())
    serve_one_job(f"redis://embedq:worker-pw@127.0.0.1:{redis.port}/0", model_dir, tmp_path)


def test_rediss_tls_works(server, model_dir, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    server(
        "--port",
        "0",
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(cert),
        "--tls-auth-clients",
        "no",
        port=port,
    )
    serve_one_job(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}", model_dir, tmp_path)


def test_no_pickle_anywhere_on_the_path():
    sources = [p for package in ("producer", "worker", "config") for p in (ROOT / package).rglob("*.py")]
    # the live gadget in test_hostile_payloads.py proves the worker refuses pickles; this keeps the code free of them
    assert sources
    assert not [str(p) for p in sources if "import pickle" in p.read_text() or "pickle.loads" in p.read_text()]
