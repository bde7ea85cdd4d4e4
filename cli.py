"""The `embedq` command. Heavy modules are imported inside the commands that need them, so
`embed`, `embed-file`, `status` and `stats` work from a producer-only install."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedq.broker.lanes import LANES
from embedq.config.settings import ClientSettings
from embedq.errors import EmbedqError, InvalidSettings
from embedq.worker.supervisor.spawn import CONFIG_ERROR_EXIT

if TYPE_CHECKING:
    from embedq import EmbedClient
    from embedq.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def _service_settings(**values: object) -> Settings:
    from embedq.config import Settings

    return Settings.load(**values)


def cmd_worker(args: argparse.Namespace) -> int:
    from embedq.worker.process import run_worker

    parent = os.getppid() if args.stop_with_parent else None
    beat = Path(args.beat_file) if args.beat_file else None
    served = run_worker(
        _service_settings(), name=args.name, burst=args.burst, parent=parent, beat=beat, home_shard=args.home_shard
    )
    return 0 if served else 1


def cmd_supervise(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from embedq.worker.model.providers import choose_providers
    from embedq.worker.model.spec import load_spec
    from embedq.worker.supervisor.supervisor import Supervisor

    settings = _service_settings()
    # What would make every child crash-loop is said once, here, before any child starts.
    load_spec(settings.model_dir)
    choose_providers(settings.providers, ort.get_available_providers(), strict=settings.strict_providers)
    return Supervisor(settings, workers=args.workers).run()


def cmd_demo(args: argparse.Namespace) -> int:
    from embedq.local.demo import run_demo

    return run_demo(_service_settings(), workers=args.workers, serve_port=args.serve)


def _client(queue: str | None = None) -> EmbedClient:
    from embedq import EmbedClient

    return EmbedClient(settings=ClientSettings.load(**({"queue": queue} if queue else {})))


def cmd_embed(args: argparse.Namespace) -> int:
    with _client() as client:
        job_id = client.submit(
            args.texts, instruction=args.instruction, dimensions=args.dimensions, prompt_name=args.prompt_name
        )
        result = client.wait(job_id, timeout=args.timeout)
    if args.json:
        print(
            json.dumps(
                {
                    "job_id": job_id,
                    "model": result.model,
                    "dim": result.dim,
                    "usage": result.usage,
                    "timings": result.timings,
                    "embeddings": result.embeddings.tolist(),
                }
            )
        )
        return 0
    print(
        f"job {job_id}: {result.usage['texts']} texts, {result.usage['tokens']} tokens, model {result.model}, "
        f"dim {result.dim}, worker {result.worker}, total {result.timings['total_ms']:.1f} ms"
    )
    for text, vector in zip(args.texts, result.embeddings):
        head = " ".join(f"{value:+.4f}" for value in vector[:6])
        print(f"{text[:40]!r:44} [{head} ...] ({len(vector)} floats)")
    return 0


def cmd_embed_file(args: argparse.Namespace) -> int:
    from embedq.producer.embed_file import embed_file

    with _client() as client:
        vectors = embed_file(
            client,
            Path(args.input),
            Path(args.out),
            batch_size=args.batch_size,
            timeout=args.timeout,
            priority=args.priority,
        )
    print(f"wrote {vectors.shape[0]} vectors of dimension {vectors.shape[1]} to {args.out}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client() as client:
        print(client.status(args.job_id))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from embedq.broker.eviction import enforce
    from embedq.producer.stats import format_stats

    with _client(args.queue) as client:
        stats = client.stats()
        enforce(stats["eviction_risk"], client.settings.require_noeviction, "embedq stats")
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from embedq.producer.cache_admin import clear_cache
    from embedq.producer.stats import cache_stats

    with _client(args.queue) as client:
        queue, shards = client.settings.queue, list(client.shards)
        if args.cache_command == "clear":
            removed = clear_cache(client.connection, queue, client.cache_connection, shards)
            print(f"removed {removed} cached vectors of queue {queue}")
            return 0
        numbers = cache_stats(client.connection, queue, client.cache_connection, shards)
    print(json.dumps(numbers, indent=2) if args.json else format_cache(queue, numbers))
    return 0


def format_cache(queue: str, numbers: dict[str, float]) -> str:
    return (
        f"cache of queue {queue}: {numbers['entries']:.0f} entries, {numbers['bytes'] / 1e6:.1f} of "
        f"{numbers['budget'] / 1e6:.1f} MB; {numbers['hits']:.0f} texts found, {numbers['misses']:.0f} not "
        f"(hit ratio {numbers['hit_ratio']:.1%}); {numbers['answered']:.0f} jobs answered without a worker; "
        f"{numbers['writes']:.0f} written, {numbers['trimmed']:.0f} trimmed, {numbers['foreign']:.0f} foreign"
    )


@contextmanager
def gateway_extra(command: str) -> Iterator[None]:
    """Imports a command needs from the gateway extra: InvalidSettings saying how to install it."""
    try:
        yield
    except ImportError as error:
        raise InvalidSettings(
            f"embedq {command} needs the gateway extra: pip install 'embedq[gateway]' ({error})"
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    with gateway_extra("serve"):
        import uvicorn

        from embedq.config.settings import GatewaySettings
        from embedq.gateway.app import create_app
        from embedq.gateway.connections import guarded_protocol
    overrides = {key: value for key, value in (("http_host", args.host), ("http_port", args.port)) if value}
    settings = GatewaySettings.load(**overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        access_log=False,
        http=guarded_protocol(settings.http_read_timeout, settings.http_max_connections),
        timeout_keep_alive=int(min(5, settings.http_read_timeout)) or 1,
    )
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    import asyncio

    from embedq.errors import BatchNotFound, QueueUnavailable

    with gateway_extra("batches"):
        from redis.exceptions import RedisError

        from embedq.broker.connection import async_redis
        from embedq.broker.keys import BatchKeys
        from embedq.config.settings import GatewaySettings
        from embedq.gateway.batch.batches import Batches
        from embedq.gateway.openai_shape import OpenAIError
    settings = GatewaySettings.load()

    async def run() -> Any:
        connection = async_redis(settings, socket_connect_timeout=2, socket_timeout=10)
        batches = Batches(connection, settings.files_retention.total_seconds(), BatchKeys.of(settings.redis_cluster))
        try:
            if args.batches_command == "list":
                return (await batches.page("", None, args.limit))["data"]
            if args.batches_command == "show":
                return await batches.get(args.batch_id, "")
            return await batches.cancel(args.batch_id, "")
        finally:
            await connection.aclose()

    try:
        answer = asyncio.run(run())
    except OpenAIError as error:
        raise (BatchNotFound if error.status == 404 else EmbedqError)(error.message) from None
    except RedisError as error:
        raise QueueUnavailable(f"Redis did not answer: {type(error).__name__}") from None
    if args.batches_command == "list" and not args.json:
        print(f"{'id':<32} {'status':<11} {'done':>15} {'failed':>7}  created")
        for batch in answer:
            counts = batch["request_counts"]
            done = f"{counts['completed']}/{counts['total']}"
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(batch["created_at"]))
            print(f"{batch['id']:<32} {batch['status']:<11} {done:>15} {counts['failed']:>7}  {created}")
    else:
        print(json.dumps(answer, indent=2))
    return 0


def cmd_model_prepare(args: argparse.Namespace) -> int:
    from embedq.worker.model.export import default_source, prepare_default

    settings = _service_settings()
    target = Path(args.dir) if args.dir else settings.model_dir
    stsb = Path(args.stsb) if args.stsb else settings.stsb
    if args.quantize == "int8" and stsb is None:
        raise InvalidSettings("--quantize int8 is judged on STS Benchmark: pass --stsb PATH or set EMBEDQ_STSB")
    prepare_default(target, force=args.force)
    print(f"model ready in {target}")
    if args.quantize == "int8" and stsb is not None:
        from embedq.worker.model.quantize import int8_dir, quantize_int8

        report = quantize_int8(default_source(), target, stsb)
        print(
            f"int8 copy ready in {int8_dir(target)} ({len(report.sensitive_layers)} sensitive layers kept in "
            f"{report.recipe['sensitive_as']}): "
            f"{report.summary()}; serve it with EMBEDQ_MODEL_DIR={int8_dir(target)} on a queue of its own"
        )
    return 0


def cmd_model_validate(args: argparse.Namespace) -> int:
    from embedq.worker.model.spec import validate

    directory = Path(args.dir) if args.dir else _service_settings().model_dir
    report = validate(directory)
    spec = report["spec"]
    print(f"OK {directory}")
    print(f"  onnx: {spec.onnx_path.relative_to(spec.directory)} (external data: all present)")
    print(f"  tokenizer: {spec.tokenizer_path.name}")
    for kind in ("inputs", "outputs"):
        print(f"  {kind}:")
        for name, shape, dtype in report[kind]:
            print(f"    {name:<22} {dtype:<16} {shape}")
    print(f"  dim {spec.dim}, max length {spec.max_length}, pooling {spec.pooling}")
    if report["quality"]:
        print(f"  quality: {json.dumps(report['quality'])}")
    return 0


def cmd_model_info(args: argparse.Namespace) -> int:
    import onnxruntime as ort

    from embedq.worker.model.providers import choose_providers
    from embedq.worker.model.spec import load_spec

    settings = _service_settings()
    spec = load_spec(Path(args.dir) if args.dir else settings.model_dir)
    providers = choose_providers(settings.providers, ort.get_available_providers(), strict=settings.strict_providers)
    graph = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
    info = {
        "model": spec.name,
        "directory": str(spec.directory),
        "onnx": str(spec.onnx_path),
        "dimension": spec.dim,
        "max_tokens": min(settings.max_length or spec.max_length, spec.max_length),
        "pooling": settings.pooling or spec.pooling,
        "prompts": spec.prompts,
        "inputs": ", ".join(f"{i.name} {i.type}" for i in graph.get_inputs()),
        "output": ", ".join(f"{o.name} {o.type}" for o in graph.get_outputs()[:1]),
        "providers": [name for name, _ in providers],
        "provider_options": {name: options for name, options in providers if options},
        "intra_op_threads": settings.threads_per_worker(),
    }
    for key, value in info.items():
        print(f"{key:<17} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedq", description="Text embeddings behind a Redis job queue.")
    commands = parser.add_subparsers(dest="command", required=True)
    for add in (_fleet_commands, _gateway_commands, _client_commands, _model_commands):
        add(commands)
    return parser


def _fleet_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser("worker", help="run one worker process on the configured queue")
    worker.add_argument("--name", help="worker name (default: host.pid)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument(
        "--stop-with-parent",
        action="store_true",
        help="finish the current pass and exit when the parent process is gone (what `embedq supervise` asks)",
    )
    worker.add_argument("--beat-file", help="keep this heartbeat file for the supervisor's hung-worker watch")
    worker.add_argument(
        "--home-shard",
        type=int,
        help="the queue's shard it serves first (default: chosen by its pid; see QUEUE_SHARDS)",
    )
    worker.set_defaults(run=cmd_worker)

    supervise = commands.add_parser("supervise", help="run N worker processes, restarting any that dies")
    supervise.add_argument("--workers", type=int, help="number of worker processes (default: EMBEDQ_WORKERS)")
    supervise.set_defaults(run=cmd_supervise)

    demo = commands.add_parser("demo", help="Redis → model → workers → sample jobs → similarities and metrics")
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument(
        "--serve", type=int, nargs="?", const=8000, metavar="PORT", help="then run the HTTP gateway until Ctrl-C"
    )
    demo.set_defaults(run=cmd_demo)


def _gateway_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser("serve", help="the HTTP gateway: OpenAI's /v1/embeddings in front of the queue")
    serve.add_argument("--host", help="address to listen on (default: EMBEDQ_HTTP_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: EMBEDQ_HTTP_PORT, 8000)")
    serve.set_defaults(run=cmd_serve)

    batches = commands.add_parser("batches", help="the Batch API's batches: list, show or cancel them")
    batch_commands = batches.add_subparsers(dest="batches_command", required=True)
    listing = batch_commands.add_parser("list", help="the newest batches, with their status and counts")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=cmd_batches)
    for name, text in (("show", "one batch as OpenAI's batch object (JSON)"), ("cancel", "cancel a running batch")):
        sub = batch_commands.add_parser(name, help=text)
        sub.add_argument("batch_id")
        sub.set_defaults(run=cmd_batches)


def _client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    embed = commands.add_parser("embed", help="enqueue texts, wait, print their vectors")
    embed.add_argument("texts", nargs="+")
    embed.add_argument("--json", action="store_true", help="print the full result as JSON")
    embed.add_argument("--instruction", help="task instruction for query embeddings")
    embed.add_argument("--prompt-name", help="a prompt the model defines, e.g. query")
    embed.add_argument("--dimensions", type=int, help="Matryoshka: keep this many dimensions")
    embed.add_argument("--timeout", type=float, default=60.0)
    embed.set_defaults(run=cmd_embed)

    embed_file = commands.add_parser("embed-file", help="embed a file (one text a line, or .jsonl) into a .npy")
    embed_file.add_argument("input")
    embed_file.add_argument("--out", required=True, help="output .npy (float32, one row a text)")
    embed_file.add_argument("--batch-size", type=int, default=64, help="texts per job")
    embed_file.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one job")
    embed_file.add_argument(
        "--priority", choices=LANES, default="bulk", help="lane (default bulk: interactive work goes first)"
    )
    embed_file.set_defaults(run=cmd_embed_file)

    status = commands.add_parser("status", help="queued | started | finished | failed | unknown")
    status.add_argument("job_id")
    status.set_defaults(run=cmd_status)

    stats = commands.add_parser("stats", help="queue depth, workers, counters, timing percentiles")
    stats.add_argument("--json", action="store_true")
    stats.add_argument("--queue", help="the queue to describe (default: EMBEDQ_QUEUE)")
    stats.set_defaults(run=cmd_stats)

    cache = commands.add_parser("cache", help="the fleet-wide cache: its hits and size, or clear it")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (("stats", "hits, misses, entries and bytes"), ("clear", "remove every cached vector")):
        command = cache_commands.add_parser(name, help=text)
        command.add_argument("--queue", help="the queue whose cache (default: EMBEDQ_QUEUE)")
        if name == "stats":
            command.add_argument("--json", action="store_true")
        command.set_defaults(run=cmd_cache)


def _model_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = commands.add_parser("model", help="prepare, validate or describe the model directory")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    prepare = model_commands.add_parser("prepare", help="export the default model to ONNX (once)")
    prepare.add_argument("--dir", help="target directory (default: EMBEDQ_MODEL_DIR)")
    prepare.add_argument("--force", action="store_true", help="export again even if prepared")
    prepare.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write an int8 copy beside it (<dir>-int8), kept only if its vectors stay close to fp32's "
        "(cosine, top-10 neighbours, STS-B on held-out text)",
    )
    prepare.add_argument(
        "--stsb", help="STS Benchmark test file (sts-test.csv) for the int8 quality gate (default: EMBEDQ_STSB)"
    )
    prepare.set_defaults(run=cmd_model_prepare)
    for name, run, text in (
        ("validate", cmd_model_validate, "load and check a model directory"),
        ("info", cmd_model_info, "model, dimension, max tokens, pooling, providers"),
    ):
        sub = model_commands.add_parser(name, help=text)
        sub.add_argument("dir", nargs="?", help="model directory (default: EMBEDQ_MODEL_DIR)")
        sub.set_defaults(run=run)


def main(argv: list[str] | None = None) -> int:
    """Run one command. An EmbedqError (a user's error: bad input, settings, model, Redis away) is one
    line on stderr and exit 1 (2 for settings); anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)

    try:
        code: int = args.run(args)
        return code
    except EmbedqError as error:
        message = " ".join(str(error).split())
        print(f"embedq: {type(error).__name__}: {message}", file=sys.stderr)
        return CONFIG_ERROR_EXIT if isinstance(error, InvalidSettings) else 1


if __name__ == "__main__":
    sys.exit(main())
