"""The layout keeps its promises (README, "Where the code lives"): imports point one way, rq is imported
only in broker/rq_private, and no two modules import each other, directly or round a loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from embedq.worker.supervisor.spawn import embedq_command

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
# What each part may import of embedq's other parts (cli and local sit on top and may import anything).
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "broker": {"config", "errors"},
    "producer": {"broker", "config", "errors"},
    "worker": {"broker", "config", "errors"},
    "gateway": {"producer", "broker", "config", "errors"},
    "__init__": {"producer", "broker", "config", "errors"},
}
# Kept for one release: the module path supervisors of 0.2 start their workers with.
OLD_ENTRY_POINT = "worker/cli.py"


def sources() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [path for path in listed.stdout.split() if not path.startswith(("tests/", "bench/"))]


def module_of(path: str) -> str:
    dotted = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    return "embedq" if dotted == "__init__" else f"embedq.{dotted}"


def imports(path: str) -> Iterator[str]:
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def part(path: str) -> str:
    return path.split("/")[0].removesuffix(".py")


def test_each_part_imports_only_the_parts_below_it():
    wrong = []
    for path in sources():
        if path == OLD_ENTRY_POINT or part(path) not in ALLOWED:
            continue
        for name in imports(path):
            if name.startswith("embedq."):
                target = name.split(".")[1]
                if target != part(path) and target not in ALLOWED[part(path)]:
                    wrong.append(f"{path} imports {name}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_rq_is_imported_only_in_broker_rq_private():
    outside = [
        f"{path} imports {name}"
        for path in sources()
        if not path.startswith("broker/rq_private/")
        for name in imports(path)
        if name == "rq" or name.startswith("rq.")
    ]
    assert not outside, "\n".join(outside)


def test_no_module_imports_itself_round_a_loop():
    modules = {module_of(path): path for path in sources()}
    graph = {
        module: {name for name in imports(path) if name in modules and name != module}
        for module, path in modules.items()
    }
    loops = []

    def visit(module: str, trail: list[str]) -> None:
        for target in graph[module]:
            if target in trail:
                loops.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in done:
                visit(target, [*trail, target])
        done.add(module)

    done: set[str] = set()
    for module in graph:
        if module not in done:
            visit(module, [module])
    assert not loops, "\n".join(sorted(set(loops)))


def test_the_module_path_running_supervisors_start_workers_with_still_runs_the_cli():
    """Supervisors of 0.2 start `python -m embedq.worker.cli worker ...`: kept for one release."""
    old = subprocess.run(
        [sys.executable, "-P", "-m", "embedq.worker.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert old.returncode == 0 and "supervise" in old.stdout, old.stderr[-500:]
    assert embedq_command("worker")[-2:] == ["embedq.cli", "worker"]
