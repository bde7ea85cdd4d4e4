"""embedq installs as one package, `embedq`, and nothing a web app keeps in its own directory (a
worker.py, a producer.py, a config.py) can shadow it: not in the demo, not in supervised workers,
not in an installed wheel."""

import os
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest

from embedq.local.redis_server import free_port

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).with_name("embedq")
SHADOWS = ("worker", "producer", "config")


def shadowing_dir(parent: Path, names: tuple[str, ...]) -> Path:
    """A web app's directory whose own modules of these names refuse to be imported."""
    directory = parent / "webapp"
    directory.mkdir()
    for name in names:
        (directory / f"{name}.py").write_text(f"raise ImportError('the web app\\'s own {name}.py was imported')\n")
    return directory


@pytest.fixture
def app_dir(tmp_path):
    return shadowing_dir(tmp_path, SHADOWS)


@pytest.fixture
def launch_dir(tmp_path):
    """A working directory that would break any child started with it on its import path: even an
    embedq.py there is never imported by embedq's own processes."""
    return shadowing_dir(tmp_path, (*SHADOWS, "embedq"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EMBEDQ_")}
    return {**env, **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("embedq-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package_and_the_web_app_install_needs_no_model_runtime(wheel):
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    dist_info = next(name.split("/")[0] for name in names if ".dist-info/" in name)
    assert {name.split("/")[0] for name in names} == {"embedq", dist_info}
    shipped = subprocess.run(  # every module, script and page of the tree, but tests and benchmarks
        ["git", "ls-files", "*.py", "*.lua", "*.html", "py.typed"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    missing = {f"embedq/{path}" for path in shipped if not path.startswith(("tests/", "bench/"))} - set(names)
    assert not missing, f"pyproject.toml's packages leave out {sorted(missing)}"
    assert {"embedq/cli.py", "embedq/broker/lua/enqueue.lua", "embedq/gateway/status.html"} <= set(names)
    assert not [name for name in names if name.startswith(("embedq/tests/", "embedq/bench/"))]
    metadata = Parser().parsestr(archive.read(f"{dist_info}/METADATA").decode())
    base = [req for req in metadata.get_all("Requires-Dist") if "extra ==" not in req]
    assert "rq<3.1,>=3.0" in [req.replace(" ", "") for req in base]
    assert not [req for req in base if req.lower().startswith(("onnxruntime", "tokenizers", "torch"))]


def test_import_embedq_from_the_installed_wheel_inside_a_web_app_directory(wheel, app_dir, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = (
        "import sys, embedq; from embedq import EmbedClient, EmbedResult, EmbedqError, InvalidInput, QueueFull, "
        "QueueUnavailable, JobFailed, JobTimeout, JobNotFound; print(embedq.__file__); "
        "print('onnxruntime' in sys.modules, 'torch' in sys.modules)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(target)),
    )
    assert run.returncode == 0, run.stderr
    where, heavy = run.stdout.splitlines()
    assert where == str(target / "embedq" / "__init__.py")
    assert heavy == "False False", "importing the client must not load the model runtime"


def test_the_demo_runs_from_a_web_app_directory(launch_dir, model_dir):
    run = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo"],
        cwd=launch_dir,
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(EMBEDQ_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", EMBEDQ_MODEL_DIR=str(model_dir)),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "workers alive: 2" in run.stdout
    assert "the web app's own" not in run.stdout + run.stderr


def test_supervised_workers_serve_a_web_app_script_from_its_own_directory(launch_dir, redis_url, model_dir, encoder):
    queue = "packaging-shadow"
    env = clean_env(EMBEDQ_REDIS_URL=redis_url, EMBEDQ_MODEL_DIR=str(model_dir), EMBEDQ_QUEUE=queue)
    # The web app's script lives in a folder of its own (its import path); the supervisor starts in launch_dir.
    (launch_dir / "app").mkdir()
    (launch_dir / "app" / "app.py").write_text(
        "import numpy as np\n"
        "from embedq import EmbedClient\n"
        "with EmbedClient() as client:\n"
        "    np.save('vectors.npy', client.embed(['a web app embeds this', 'and this'], timeout=60))\n"
    )
    supervisor = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "supervise", "--workers", "2"],
        cwd=launch_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        app = subprocess.run(
            [sys.executable, "app/app.py"], cwd=launch_dir, capture_output=True, text=True, timeout=120, env=env
        )
        assert app.returncode == 0, app.stderr
    finally:
        supervisor.terminate()
        log, _ = supervisor.communicate(timeout=120)
    assert supervisor.returncode == 0, log
    assert "the web app's own" not in log and "restarting in" not in log, log
    np.testing.assert_allclose(
        np.load(launch_dir / "vectors.npy"), encoder.encode(["a web app embeds this", "and this"]).vectors, atol=1e-5
    )
