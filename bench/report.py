"""Make the published figures from the benchmarks' saved results (bench/results/*.json): all of
BENCHMARKS.md, and README.md's "Measured here" block. No figure is typed by hand, and no single
benchmark run overwrites the page.

    ./dev bench report"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
README_BEGIN = "<!-- measured: made by bench/report.py from bench/results/*.json; do not edit by hand -->"
README_END = "<!-- /measured -->"
README_CLUSTER_BEGIN = "<!-- cluster: made by bench/report.py from bench/results/cluster.json; do not edit by hand -->"
README_CLUSTER_END = "<!-- /cluster -->"
GATEWAY_ADDED_MS = 0.5  # issue 23: one text through the gateway at most this much over the Python client, idle


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def stamp(result: dict[str, Any]) -> str:
    """Script, day and machine, with the CPU where the run recorded it (every figure depends on it)."""
    m = result["machine"]
    on = f", on {cpu(result)}" if "cpu_model" in m else ""
    return (
        f"`{result['script']}`, {result['measured_at'][:10]}; {m['cpu']}, {m['cores']} cores, Python {m['python']}, "
        f"onnxruntime {m['onnxruntime']} (CPU){on}"
    )


def cpu(result: dict[str, Any]) -> str:
    """The CPU and its SIMD flags (int8 speed depends on VNNI), where the run recorded them."""
    m = result["machine"]
    flags = ", ".join(flag for flag in m.get("cpu_flags", []) if "vnni" in flag or flag in ("avx2", "avx512f"))
    return f"{m.get('cpu_model', m['cpu'])} ({flags or 'no AVX2/AVX-512/VNNI flags'})"


def met(ratio: float, goal: str) -> str:
    if not goal:
        return ""
    target = float(goal.split()[-1])
    return f"{goal}: {'met' if ratio >= target else 'missed'}"


def rows_by_key(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in run["rows"]}


def run_section(run: dict[str, Any]) -> list[str]:
    rows = rows_by_key(run)
    latency = run["latency"]
    lines = [
        "## Throughput and latency — `./dev bench` (bench/run.py)",
        "",
        f"Measured by {stamp(run)}. Corpus: {run['corpus_texts']} texts — STS Benchmark test sentences plus 1 in 16",
        "long concatenations (12 sentences, truncated at the model's 256 tokens). A and B alternate in each of "
        f"{run['repeats']} repeats; medians.",
        "",
        "| measure (A vs B) | A | B | B / A | goal |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in run["rows"]:
        lines.append(
            f"| {row['measure']} | {row['a']:,.1f} {row['unit']} | {row['b']:,.1f} {row['unit']} | "
            f"{row['ratio']:.2f} | {met(row['ratio'], row['goal'])} |"
        )
    lines += [
        "",
        "| one short text, enqueue → result (loopback Redis, 2 workers) | ms |",
        "| --- | ---: |",
        f"| p50 | {latency['p50_ms']:.2f} |",
        f"| p95 | {latency['p95_ms']:.2f} |",
        f"| raw inference p50 (1 thread) | {latency['raw_p50_ms']:.2f} |",
        f"| queue overhead at p50 (goal ≤ 3: {'met' if latency['overhead_p50_ms'] <= 3 else 'missed'}) | "
        f"{latency['overhead_p50_ms']:.2f} |",
        "",
        "What the rows mean:",
        "",
        "- **sentence-transformers vs Encoder.** sentence-transformers runs as its users run it: the whole corpus in",
        "  one `encode(texts, batch_size=B)` call, which sorts the texts by length and pads each batch to its",
        "  longest. embedq's Encoder gets the corpus as jobs of B texts, as a web app sends them, and cuts each",
        "  job into length-sorted micro-batches under `MAX_BATCH_TOKENS`, also cut wherever the next text is much",
        "  longer than the batch's shortest. Both use all cores. At batch 1 there is no padding on either side:",
        f"  the {rows['st_b1']['ratio']:.2f}× is ONNX Runtime against PyTorch. With one call over the whole corpus each, "
        f"embedq does {rows['st_one_call']['ratio']:.2f}×.",
    ]
    if "st_per_request" in rows:
        lines += [
            "- **Per 32-text request.** What a server gets: 32 texts per call, unsorted across calls. Here",
            "  sentence-transformers pads each request to its longest text (1 in 16 texts is 256 tokens), so the",
            f"  ratio ({rows['st_per_request']['ratio']:.2f}×) is much larger than over the sorted corpus; it is kept, "
            "labelled, because it is the service's case, not because it is sentence-transformers' best.",
        ]
    if "st_int8" in rows:
        lines.append(
            f"- **int8** (`embedq model prepare --quantize int8`): {rows['st_int8']['ratio']:.2f}× "
            "sentence-transformers fp32 on the same corpus."
        )
    lines += [
        f"- **Queue vs in-process ({rows['queue_vs_inprocess']['ratio']:.2f}).** Jobs of 32 texts through Redis and two",
        "  single-thread workers against one in-process Encoder with all cores.",
        f"- **1 vs 2 workers ({rows['one_vs_two_workers']['ratio']:.2f}).** With intra-op threads set to cores ÷ workers,",
        "  both layouts use every core, and ONNX Runtime's 2-thread scaling on this model is near-linear, so a",
        "  second process adds isolation (a crash or a slow job stops half the capacity, not all of it), not",
        "  throughput. 1.7× would hold only against 1 worker × 1 thread, which leaves a core idle.",
        f"- **Coalescing ({rows['coalesce_mixed']['ratio']:.2f}× on the mixed corpus, "
        f"{rows['coalesce_short']['ratio']:.2f}× on short queries).** A worker that",
        "  finds single-text jobs waiting embeds them in one pass, and rq's records of the whole pass cost",
        "  two scripts (bench/fleet.py counts them). What bounds the ratio is then how much cheaper a short",
        "  text is inside a batch of 32 than alone on this CPU, with both workers' inference sharing its two",
        "  cores: the worker's own log (`LOG_LEVEL=INFO`) shows each pass's inference time.",
        "- **Latency.** Client: one round trip — the submit script and an `XREAD BLOCK` on the job's rq result",
        "  stream, which the worker's record script wakes with the vectors in it. Worker: woken by the",
        "  submit's doorbell ring, one script takes and starts the job, inference, one script records it.",
    ]
    return lines


def quality_section(quality: dict[str, Any]) -> list[str]:
    lines = [
        "## Quality — `./dev bench quality` (bench/quality.py)",
        "",
        f"Measured by {stamp(quality)}: the STS Benchmark test set ({quality['pairs']} pairs, {quality['sentences']} "
        "distinct sentences), cosine Spearman × 100.",
        "",
        "| vectors | STS-B cosine Spearman |",
        "| --- | ---: |",
        f"| embedq, through the queue (2 workers) | {quality['through_queue']:.2f} |",
        f"| sentence-transformers, same model | {quality['sentence_transformers']:.2f} |",
        f"| published (MTEB) | {quality['published']:.2f} |",
    ]
    if "int8" in quality:
        lines.append(f"| embedq int8 copy (in-process) | {quality['int8']:.2f} |")
    lines += [
        "",
        f"Every sentence's embedq vector against sentence-transformers': cosine ≥ "
        f"{quality['cosine_to_sentence_transformers_min']:.7f}.",
    ]
    return lines


def export_section(export: dict[str, Any]) -> list[str]:
    lines = [
        "## The fp32 export — `./dev bench export` (bench/export.py)",
        "",
        f"Measured by {stamp(export)}. Each way of exporting all-MiniLM-L6-v2 to ONNX embeds",
        f"the {export['sentences']:,} STS-B test sentences through embedq's Encoder, length-sorted batches of 32 and",
        f"single texts, candidates alternating, median of {export['repeats']} repeats; × is against embedq 0.2's export.",
        "",
        "| export | cosine to sentence-transformers (min) | batches of 32, 1 thread | 2 threads | single texts, 2 threads |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in export["candidates"]:
        name = f"**{row['candidate']} (ships)**" if row["ships"] else row["candidate"]
        lines.append(
            f"| {name} | {row['cosine_to_sentence_transformers_min']:.7f} | {row['batch32_1t']:.0f}/s "
            f"({row['batch32_1t_vs_embedq_0.2']:.2f}×) | {row['batch32_2t']:.0f}/s ({row['batch32_2t_vs_embedq_0.2']:.2f}×) "
            f"| {row['single_2t']:.0f}/s ({row['single_2t_vs_embedq_0.2']:.2f}×) |"
        )
    lines += [
        "",
        "The dynamo exporter keeps scaled-dot-product attention decomposed (IsNaN / Where guards around each",
        "Softmax) that ONNX Runtime cannot fuse; the TorchScript exporter over eager attention gives plain",
        "MatMul / Softmax attention. ONNX Runtime's offline BERT fusion (Attention, EmbedLayerNormalization) helps",
        "single texts but not batches of 32 on this CPU, so it does not ship. Goal: ≥ 1.1× embedq 0.2 on batches of 32.",
    ]
    return lines


def int8_section(int8: dict[str, Any]) -> list[str]:
    goals = int8["goals"]
    kind = "with VNNI" if any("vnni" in flag for flag in int8["machine"].get("cpu_flags", [])) else "without VNNI"
    lines = [
        f"## int8 on a CPU {kind} — `./dev bench int8` (bench/int8.py)",
        "",
        f"Measured by {stamp(int8)}. Calibration and judging never share text: the STS-B test",
        "sentences are split in two with a fixed seed; each recipe calibrates on one half and is judged on the other",
        f"({int8['evaluation_texts']:,} sentences; STS-B on the {int8['evaluation_pairs']} pairs with both sentences there,",
        f"where fp32 scores {int8['stsb_fp32']:.2f}); neighbour overlap: top-10 of every text as a query against the",
        "rest, the query excluded; the goals must hold on the whole half and on each of its two disjoint splits",
        "(fixed seed; the worst split's overlap is shown). Speed: length-sorted batches of 32 through the Encoder,",
        "beside fp32, alternating.",
        f"Goals: cosine p1 ≥ {goals['cosine_p1']}, median ≥ {goals['cosine_median']}, overlap ≥ "
        f"{goals['neighbour_overlap']}, STS-B within {goals['stsb_max_loss']} of fp32, ≥ {goals['speedup']}× fp32.",
        "",
        "| recipe | cosine min | p1 | median | top-10 overlap | worst split | STS-B | × fp32, 1 thread | 2 threads | goals |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in int8["variants"]:
        fast = max(row["speedup_1t"], row["speedup_2t"]) >= goals["speedup"]
        verdict = "met" if row["meets_goals"] and fast else "missed"
        name = f"**{row['variant']}**" if row.get("ships", "ships" in row["variant"]) else row["variant"]
        worst = f"{row['worst_split_overlap']:.3f}" if "worst_split_overlap" in row else "—"
        lines.append(
            f"| {name} | {row['cosine_min']:.4f} | {row['cosine_p1']:.4f} | {row['cosine_median']:.4f} | "
            f"{row['neighbour_overlap']:.3f} | {worst} | {row['stsb']:.2f} | {row['speedup_1t']:.2f}× | "
            f"{row['speedup_2t']:.2f}× | {verdict} |"
        )
    lines += [
        "",
        f"fp32 here: {int8['fp32_batch32_1t']:.0f} texts/s on 1 thread, {int8['fp32_batch32_2t']:.0f} on 2. Smoothing",
        "(SmoothQuant) divides each linear layer's input by a per-channel scale its weights take on, so the few",
        "outlier channels of LayerNorm and GELU outputs no longer set the int8 step of every other channel; the",
        "sensitive layers are found by quantizing one layer at a time on the calibration half. Static QDQ with",
        "min/max calibration clips nothing and so spends its 8 bits on those outliers.",
    ]
    if profile := int8.get("profile_ms"):
        ops = sorted({op for graph in profile.values() for op in graph}, key=lambda op: -profile["fp32"].get(op, 0))
        ops = sorted(ops, key=lambda op: -sum(graph.get(op, 0) for graph in profile.values()))[:10]
        lines += [
            "",
            "Where the time goes (ONNX Runtime's profiler, 1 thread, the same batches of 32; ms per operator type)"
            + (f". {int8['profile_note']}" if "profile_note" in int8 else ":"),
            "",
            "| operator | " + " | ".join(profile) + " |",
            "| --- |" + " ---: |" * len(profile),
            *(f"| {op} | " + " | ".join(f"{graph.get(op, 0):,.0f}" for graph in profile.values()) + " |" for op in ops),
            "| all | " + " | ".join(f"{sum(graph.values()):,.0f}" for graph in profile.values()) + " |",
        ]
    return lines


def gateway_section(gateway: dict[str, Any]) -> list[str]:
    single, idle, sizes, ceiling = (
        gateway["single_text_16_clients"],
        gateway["idle_latency_p50_ms"],
        gateway["response_512_texts"],
        gateway["ceiling"],
    )
    spread = ", ".join(f"{r:.2f}" for r in single["ratios"])
    return [
        "## The HTTP gateway — `./dev bench gateway` (bench/gateway.py)",
        "",
        f"Measured by {stamp(gateway)}. `embedq serve` against the Python client, the same 2 workers, the same 2 cores",
        "(gateway, workers and the load generator share them), side by side, alternating. HTTP load comes from the",
        "standard library's http.client (one keep-alive connection per client thread); the httpx rows show the same",
        "gateway driven by httpx, the openai SDK's transport, which spends ~4× the CPU per request of http.client and",
        "here takes it from the cores it measures (in production the clients run elsewhere).",
        "",
        "| workload | gateway | Python client | ratio | goal |",
        "| --- | ---: | ---: | ---: | --- |",
        f"| one-text requests (base64, as the SDKs ask), {gateway['concurrent_clients']} concurrent clients | "
        f"{single['gateway_rps']:.0f} req/s | {single['client_rps']:.0f} req/s | {single['ratio']:.2f}× ({spread}) | "
        f"{met(single['ratio'], '≥ 0.8')} |",
        f"| the same, driven by httpx | {single['httpx_rps']:.0f} req/s | {single['client_rps']:.0f} req/s | "
        f"{single['httpx_ratio']:.2f}× | — |",
        f"| one text at a time on an idle fleet, p50 | {idle['gateway']:.2f} ms | {idle['client']:.2f} ms | "
        f"+{idle['added']:.2f} ms | ≤ +{GATEWAY_ADDED_MS} ms: {'met' if idle['added'] <= GATEWAY_ADDED_MS else 'missed'} |",
        f"| the same, driven by httpx | {idle['httpx']:.2f} ms | {idle['client']:.2f} ms | "
        f"+{idle['httpx_added']:.2f} ms | — |",
        "",
        f"The gateway spent {single['gateway_cpu_ms_per_request']:.2f} ms of CPU per one-text request. Its own ceiling, "
        f"with the queue answering at once (workers serving a one-layer model of the same width), "
        f"{ceiling['clients']} clients: **{ceiling['rps']:.0f} req/s** on these 2 shared cores, "
        f"{ceiling['gateway_cpu_ms_per_request']:.2f} ms of gateway CPU per request = **~{ceiling['rps_per_gateway_core']:.0f} "
        "req/s per core** of gateway: one replica per ~that many requests/s at peak.",
        "",
        f"512 texts in one request: float JSON {sizes['float']['bytes'] / 1e6:.2f} MB in {sizes['float']['ms']:.0f} ms, "
        f"base64 {sizes['base64']['bytes'] / 1e6:.2f} MB in {sizes['base64']['ms']:.0f} ms.",
        *floors_lines(idle.get("floors")),
    ]


def floor_note(floors: dict[str, float] | None) -> str:
    return (
        f"; one request to a uvicorn app that does nothing: {floors['uvicorn_smallest_app']:.2f} ms" if floors else ""
    )


def floors_lines(floors: dict[str, float] | None) -> list[str]:
    """What one idle round trip costs before any work, measured beside the gateway (absent from older runs)."""
    if not floors:
        return []
    return [
        "",
        f"The floors, idle p50 in the same run: one Redis PING {floors['redis_ping']:.2f} ms; one request to the "
        f"smallest uvicorn app (bench/http_floor_app.py: the gateway's loop and parser, no work) "
        f"**{floors['uvicorn_smallest_app']:.2f} ms**. The HTTP hop alone costs more than the +{GATEWAY_ADDED_MS} ms "
        "goal whenever that figure is above it: the goal is then out of reach of any Python ASGI server here.",
    ]


def infinity_section(peer: dict[str, Any]) -> list[str]:
    rows = peer["rows"]
    labels = {
        "single_text_16_clients": ("one-text requests, 16 concurrent clients", "req/s"),
        "batches_of_32_8_clients": ("requests of 32 texts, 8 concurrent clients", "texts/s"),
        "idle_latency_p50_ms": ("one text at a time on an idle server, p50", "ms"),
    }
    lines = [
        "## Against infinity — `./dev bench infinity_peer` (bench/infinity_peer.py)",
        "",
        f"Measured by {stamp(peer)}. {peer['peer']} (model pre-optimised with optimum, mean pooling, batch size 32)",
        "against `embedq serve` in front of 2 workers, the same 2 cores, HTTP `/v1/embeddings` on both sides driven by",
        "the same load generator (http.client keep-alive, benchlib.KeepAlive), the same STS-B sentences, alternating;",
        f"vectors agree to cosine ≥ {peer['cosine_min']:.6f}. Ratio > 1: embedq ahead.",
        "",
        "| workload | embedq (gateway) | infinity | ratio | per repeat | goal ≥ 1.0× |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for key, (label, unit) in labels.items():
        row = rows[key]
        spread = ", ".join(f"{r:.2f}" for r in row["ratios"])
        lines.append(
            f"| {label} | {row['embedq']:.1f} {unit} | {row['infinity']:.1f} {unit} | {row['ratio']:.2f}× | {spread} | "
            f"{'met' if row['ratio'] >= 1 else 'missed'} |"
        )
    return lines


def aof_section(aof: dict[str, Any]) -> list[str]:
    every, always = aof["everysec"], aof["always"]
    runs = len(every["runs"])
    return [
        "## Redis killed with kill -9 — `./dev bench aof_loss` (bench/aof_loss.py)",
        "",
        f"Measured by {stamp(aof)}. A producer submits one-text jobs as fast as it can; Redis (AOF) is SIGKILLed",
        "mid-stream and restarted on its AOF; lost = jobs whose `submit` had returned and that have no record after",
        f"the restart. {runs} kills each.",
        "",
        "| appendfsync | submits/s | acknowledged before the kill (per run) | lost (per run) |",
        "| --- | ---: | --- | --- |",
        *(
            f"| {name} | {row['submits_per_s']:.0f} | {', '.join(str(r['acknowledged']) for r in row['runs'])} | "
            f"{', '.join(str(r['lost']) for r in row['runs'])} |"
            for name, row in (("everysec (shipped)", every), ("always", always))
        ),
        "",
        "Redis writes every command to the AOF file before it replies, so a killed Redis process loses nothing",
        "acknowledged: what `everysec` risks is the operating system's page cache, i.e. up to ~1 s of writes when",
        "the machine itself crashes or loses power (not measurable here). `always` closes that at "
        f"{always['submits_per_s'] / every['submits_per_s']:.2f}× the submit rate.",
    ]


def soak_section(soak: dict[str, Any]) -> list[str]:
    steady = [sample for sample in soak["samples"] if sample["minute"] >= min(2.0, soak["minutes"] / 2)]
    first, last = steady[0], steady[-1]
    outcomes = soak["outcomes"]
    lost = sum(count for name, count in outcomes.items() if name not in ("ok", "doubled", "wrong"))
    patterns = sorted({*first["keys_without_ttl"], *last["keys_without_ttl"]})
    grew = [
        f"{name} {first['keys_without_ttl'].get(name, 0)} → {last['keys_without_ttl'].get(name, 0)}"
        for name in patterns
        if last["keys_without_ttl"].get(name, 0) > first["keys_without_ttl"].get(name, 0)
    ]
    rows = [
        ("worker B's RSS (never killed), MB", "watched_rss_mb", ".0f"),
        ("Redis connected clients", "redis_clients", "d"),
        ("Redis used memory, MB", "redis_used_mb", ".1f"),
        ("threads of supervisors + workers", "threads", "d"),
        ("open files of supervisors + workers", "fds", "d"),
    ]
    return [
        "## Soak — `./dev bench soak` (bench/soak.py)",
        "",
        f"Measured by {stamp(soak)}. {soak['minutes']:.0f} minutes, two queues (A: 2 workers, B: 1 worker, each",
        "under its own supervisor) on one redis-server with AOF, ~40 jobs/s of single texts and 1 in 20 of 64 texts,",
        "`RESULT_TTL` 60 s. Faults: " + "; ".join(soak["events"]) + ".",
        "",
        f"**{soak['jobs']:,} jobs acknowledged: {outcomes.get('ok', 0):,} finished with the right vectors, {lost} lost,"
        f" {outcomes.get('doubled', 0)} written twice** ({soak['refused_submits']} submits refused while Redis"
        f" restarted, not acknowledged); the SIGSTOPped worker was "
        + ("killed by the supervisor's watchdog." if soak["hung_worker_killed"] else "NOT killed."),
        "",
        f"| measure (every 30 s, minute {first['minute']:.1f} to {last['minute']:.1f}) | first | last | lowest | highest |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {label} | {first[key]:{spec}} | {last[key]:{spec}} | {min(x[key] for x in steady):{spec}} | "
            f"{max(x[key] for x in steady):{spec}} |"
            for label, key, spec in rows
        ),
        "",
        "Threads and open files dip only in samples taken while a killed worker's replacement was starting; Redis'",
        "clients rise as the benchmark's own 64 checker threads open their connections and drop after the Redis",
        "restart; none climbs steadily.",
        "",
        f"Worker RSS {soak['watched_rss_growth']:.3f}× from minute {first['minute']:.1f} to the end (goal ≤ 1.1×). Keys"
        " without a TTL whose count grew: " + (", ".join(grew) or "none") + " (queued and running jobs' hashes"
        " have no TTL until they end; every other such key is one per queue or per process).",
    ]


def rss_table(rows: list[dict[str, Any]], label: str, unit: str, count: int) -> list[str]:
    """RSS after the first 100 and after all `count` calls or jobs, one row each, with the growth."""
    lines = [f"| {label} | RSS after 100 {unit} | after {count:,} {unit} | growth |", "| --- | ---: | ---: | ---: |"]
    for row in rows:
        first, last = row["rss_after_100_mb"], row["rss_after_all_mb"]
        lines.append(f"| {row[label]} | {first:.0f} MB | {last:.0f} MB | {last / first:.2f}× |")
    return lines


def memory_section(memory: dict[str, Any]) -> list[str]:
    lines = ["## Memory — `./dev bench memory` (bench/memory.py)", "", f"Measured by {stamp(memory)}.", ""]
    if memory["sessions"]:
        calls = memory["sessions"][0]["calls"]
        lines += [
            f"1. ONNX Runtime session settings side by side, each in a fresh process, the same {calls:,} calls of",
            "   random shapes (1–8 texts × 3–256 tokens), 1 intra-op thread:",
            "",
            *rss_table(memory["sessions"], "settings", "calls", calls),
        ]
        lines += [
            "",
            'embedq ships "no memory pattern": memory patterns are planned per input shape, and every',
            "batch of texts has a new one. The arena-less variants hand memory back to glibc's malloc, whose",
            "fragmentation decides their curve: it has differed from run to run of this script (in one",
            'earlier run the arena-less, pattern-less variant grew the most), while "no memory pattern" has',
            "stayed flat in every run. Part 2 is the check that counts: real workers, real jobs.",
            "",
        ]
    jobs = memory["workers"][0]["jobs"]
    lines += [
        f"2. Real worker processes under the supervisor, {jobs:,} jobs of 1–4 texts × 1–250 words:",
        "",
        *rss_table(memory["workers"], "worker", "jobs", jobs),
    ]
    lines += [
        "",
        "Goal: ≤ 1.3× and < 600 MB. The activation peak of the largest micro-batch sets the plateau, so",
        "`MAX_BATCH_TOKENS` (2,048) bounds it.",
    ]
    return lines


def fleet_section(fleet: dict[str, Any], before: dict[str, Any] | None) -> list[str]:
    rows = fleet["remote_vs_local"]
    latency = rows["latency"]
    lines = [
        "## Redis on another host — `./dev bench fleet` (bench/fleet.py)",
        "",
        f"Measured by {stamp(fleet)}. The same service (2 workers) with Redis local and with Redis reached through",
        f"bench/redis_proxy.py, a userspace TCP delay line adding ~{fleet['rtt_ms']:g} ms per round trip (its threads share",
        "the 2 cores with the workers, so the remote column is a little pessimistic). A and B alternate; medians.",
        "",
        "| measure | Redis local | Redis ~1 ms away | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in ("singles", "batches"):
        row = rows[key]
        lines.append(f"| {row['measure']} | {row['local']:,.1f} | {row['remote']:,.1f} | {row['ratio']:.2f} |")
    lines += [
        f"| one short text, submit → vector, p50 (ms) | {latency['local_p50_ms']:.2f} | {latency['remote_p50_ms']:.2f} | "
        f"+{latency['added_rtts_p50']:.1f} RTT |",
        "",
        "What a job costs Redis, all included (submit, dequeue, rq's records, result, metrics, wait): the sum of",
        "`INFO commandstats` calls (a script's own commands each count) and `INFO cpu`, on a private redis-server:",
        "",
        "| per | commands | Redis CPU (µs) | largest items |",
        "| --- | ---: | ---: | --- |",
    ]
    for key, label in (
        ("embedq_single_text_job", f"single-text job ({fleet['concurrency']} concurrent requests)"),
        ("embedq_per_text_in_jobs_of_32", "text, in jobs of 32"),
        ("plain_rq_noop_job", "plain rq 3.0 no-op job (default worker)"),
    ):
        entry = fleet[key]
        top = ", ".join(f"{name} {calls:.1f}" for name, calls in list(entry["top_commands_per_job"].items())[:6])
        lines.append(f"| {label} | {entry['commands_per_job']:.1f} | {entry['redis_cpu_us_per_job']:.0f} | {top} |")
    versus = fleet["single_text_job_vs_plain_rq"]
    cpu_runs = ", ".join(f"{v:.0f}" for v in fleet["embedq_single_text_job"].get("redis_cpu_us_per_job_runs", []))
    plain_runs = ", ".join(f"{v:.0f}" for v in fleet["plain_rq_noop_job"].get("redis_cpu_us_per_job_runs", []))
    lines += [
        "",
        f"A single-text job costs {versus['commands']:.2f}× the commands and {versus['redis_cpu']:.2f}× the Redis CPU of plain",
        f"rq's no-op job (medians of alternating runs: embedq {cpu_runs} µs, plain rq {plain_runs} µs; Redis CPU per",
        "command varies 2–3× from run to run on this machine, so only the ratio in one run means much). Goals: ≤ 25",
        f"commands ({'met' if fleet['embedq_single_text_job']['commands_per_job'] <= 25 else 'missed'}) and ≤ 0.2× plain rq's CPU "
        f"({'met' if versus['redis_cpu'] <= 0.2 else 'missed'}); single-text jobs ≥ 0.8× remote vs local "
        f"({'met' if rows['singles']['ratio'] >= 0.8 else 'missed'}), jobs of 32 ≥ 0.9× "
        f"({'met' if rows['batches']['ratio'] >= 0.9 else 'missed'}), p50 ≤ +6 RTT "
        f"({'met' if latency['added_rtts_p50'] <= 6 else 'missed'}).",
        "",
        "Where it goes: a submit is one script (rq's own job records, written only if the lane has room); a",
        "worker's pass is two scripts however many jobs it holds (take and mark started; record results,",
        "registries, rq's result stream, counters and histograms); a wait is one XREAD on rq's result",
        "streams, which already carry the vectors (`embed` sends it with the submit).",
    ]
    if before:
        old, old_rows = before["embedq_single_text_job"], before["remote_vs_local"]
        lines += [
            "",
            f"Before passes (the same script at the previous release, {before['measured_at'][:10]}, on that session's",
            f"machine): {old['commands_per_job']:.1f} commands and {before['single_text_job_vs_plain_rq']['redis_cpu']:.2f}×",
            f"plain rq's CPU per single-text job; remote vs local {old_rows['singles']['ratio']:.2f}× (single-text jobs),",
            f"{old_rows['batches']['ratio']:.2f}× (jobs of 32), +{old_rows['latency']['added_rtts_p50']:.1f} RTT at p50",
            "(bench/results/fleet_before_passes.json). rq's per-job lifecycle then ran job by job inside each pass.",
        ]
    return lines


def lanes_section(lanes: dict[str, Any]) -> list[str]:
    idle, busy = lanes["interactive_idle"], lanes["interactive_under_bulk"]
    clients = lanes["async_vs_threads"]
    allowed = idle["p50_ms"] + lanes["bulk_micro_batch_ms"]
    return [
        "## Priority lanes — `./dev bench lanes` (bench/lanes.py)",
        "",
        f"Measured by {stamp(lanes)}. {lanes['workers']} workers; a {lanes['texts']:,}-text `embed-file` (jobs of 64 in",
        "the bulk lane) alone, then again with one-text interactive requests sent one at a time beside it.",
        "",
        "| measure | value |",
        "| --- | ---: |",
        f"| interactive one-text p50 / p95, idle fleet (ms) | {idle['p50_ms']:.2f} / {idle['p95_ms']:.2f} |",
        f"| interactive one-text p50 / p95, under the bulk load (ms) | {busy['p50_ms']:.2f} / {busy['p95_ms']:.2f} |",
        f"| one bulk micro-batch, one worker's threads (ms) | {lanes['bulk_micro_batch_ms']:.1f} |",
        f"| bulk alone (texts/s) | {lanes['bulk_alone_texts_per_s']:,.0f} |",
        f"| bulk with the probe beside it (texts/s) | {lanes['bulk_with_probe_texts_per_s']:,.0f} ({lanes['bulk_ratio']:.2f}×) |",
        "",
        f"Goals: interactive p50 under bulk ≤ idle p50 + one micro-batch ({allowed:.1f} ms): "
        f"{'met' if busy['p50_ms'] <= allowed else 'missed'}; bulk throughput ≥ 0.9× alone: "
        f"{'met' if lanes['bulk_ratio'] >= 0.9 else 'missed'}.",
        "",
        f"Single-text jobs from AsyncEmbedClient with 64 coroutines: {clients['async_64_jobs_per_s']:,.0f} jobs/s; from",
        f"EmbedClient in 16 threads: {clients['threads_16_jobs_per_s']:,.0f} jobs/s ({clients['ratio']:.2f}×).",
    ]


def batch_section(batch: dict[str, Any]) -> list[str]:
    rates, cpu_s = batch["texts_per_s"], batch["gateway_cpu_s"]
    idle, during, beside_file = (
        batch["interactive_idle"],
        batch["interactive_during_batch"],
        batch["interactive_during_embed_file"],
    )
    allowed = idle["p50_ms"] + batch["bulk_micro_batch_ms"]
    faster = max(rates["embed_file"], rates["requests_8x32"])
    return [
        "## Batch API — `./dev bench batch` (bench/batch.py)",
        "",
        f"Measured by {stamp(batch)}. {batch['workers']} workers; {batch['texts']:,} texts (one a line, as RAG",
        "ingestion writes them), base64 vectors in all three; median of "
        f"{batch['repeats']} rounds taking turns (a different one first each round).",
        "",
        "| way | texts/s | vs the faster peer |",
        "| --- | ---: | ---: |",
        f"| Batch API: upload → create → poll → download the output (openai SDK) | {rates['batch']:,.0f} | "
        f"**{rates['batch'] / faster:.2f}×** |",
        f"| `embedq embed-file` (the CLI, start to .npy written) | {rates['embed_file']:,.0f} | "
        f"{rates['embed_file'] / faster:.2f}× |",
        f"| /v1/embeddings, 32 texts a request, 8 threads (keep-alive) | {rates['requests_8x32']:,.0f} | "
        f"{rates['requests_8x32'] / faster:.2f}× |",
        f"| Batch API, float vectors (one run) | {batch['batch_float_texts_per_s']:,.0f} | "
        f"{batch['batch_float_texts_per_s'] / faster:.2f}× |",
        "",
        f"Goal: the batch ≥ 1.0× the faster of the other two: {'met' if rates['batch'] >= faster else 'missed'}. The",
        "batch may answer in any order (OpenAI's output is unordered), so it groups lines by length into chunks: a",
        "worker's pass gets texts of about one length and pads less; `embed-file` keeps the file's order.",
        "",
        "One-text interactive /v1/embeddings requests sent one at a time (the latency probe):",
        "",
        "| while | p50 ms | p95 ms | gateway CPU s |",
        "| --- | ---: | ---: | ---: |",
        f"| nothing (idle fleet) | {idle['p50_ms']:.2f} | {idle['p95_ms']:.2f} | |",
        f"| the batch runs | {during['p50_ms']:.2f} | {during['p95_ms']:.2f} | {cpu_s['batch']:.1f} |",
        f"| `embed-file` runs | {beside_file['p50_ms']:.2f} | {beside_file['p95_ms']:.2f} | {cpu_s['embed_file']:.1f} |",
        "",
        f"One bulk micro-batch takes {batch['bulk_micro_batch_ms']:.1f} ms on one worker's threads; the lanes goal",
        f"(interactive p50 beside bulk ≤ idle p50 + one micro-batch = {allowed:.1f} ms) is "
        f"{'met' if during['p50_ms'] <= allowed else 'missed'} while the batch runs. The gateway's CPU while the",
        "batch runs includes the probe's requests, as while `embed-file` runs; the difference is driving the batch.",
    ]


def front_door_section(door: dict[str, Any]) -> list[str]:
    lines = [
        "## The front door under abuse — `./dev bench front_door` (bench/front_door.py)",
        "",
        f"Measured by {stamp(door)}. Peak RSS (VmHWM) growth of the process that does the work.",
        "",
        "| batch input checked by the gateway | file MB | status after | peak growth MB | seconds |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for row in door["gateway"]:
        lines.append(
            f"| {row['file']} | {row['file_mb']:.0f} | {row['status_after_validation']} | "
            f"{row['validation_peak_growth_mb']:.1f} | {row['validation_s']:.2f} |"
        )
    lines += ["", "| job data in a worker (default limits) | outcome | peak growth MB |", "| --- | --- | ---: |"]
    for row in door["workers"]:
        lines.append(f"| {row['job']} | {row['outcome']} | {row['peak_growth_mb']:.1f} |")
    bomb, valid = door["workers"]
    worst = max(row["validation_peak_growth_mb"] for row in door["gateway"])
    lines += [
        "",
        f"Goals: checking either input costs the gateway ≤ 50 MB ({'met' if worst <= 50 else 'missed'}),"
        f" a {door['args']['bomb_mb']} MB bomb costs a worker < 100 MB and no more than the largest valid job "
        f"({'met' if bomb['peak_growth_mb'] < min(100, valid['peak_growth_mb']) else 'missed'}).",
    ]
    return lines


def celery_section(peer: dict[str, Any]) -> list[str]:
    lines = [
        "## Against a Celery task around sentence-transformers — `./dev bench celery_peer` (bench/celery_peer.py)",
        "",
        f"Measured by {stamp(peer)}. What users would otherwise build: Celery 5.7 (Redis broker and result",
        "backend, prefork concurrency 2, the model loaded once per process, 1 torch thread each,",
        "bench/celery_app.py) against embedq's default service (2 workers), on one redis-server, alternating;",
        f"medians of {peer['repeats']}. Both give the same vectors (cosine ≥ {peer['min_cosine_embedq_vs_celery']:.7f}).",
        "",
        "| measure | Celery + sentence-transformers | embedq | embedq's advantage |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in peer["rows"].values():
        lines.append(f"| {row['measure']} | {row['celery']:,.2f} | {row['embedq']:,.2f} | {row['ratio']:.2f}× |")
    rows = peer["rows"]

    def verdict(key: str, goal: float) -> str:
        return f"{rows[key]['ratio']:.2f}× ({'met' if rows[key]['ratio'] >= goal else 'missed'})"

    lines += [
        "",
        f"Goals: single-text jobs ≥ 4×: {verdict('singles', 4)}; jobs of 32 ≥ 1.5×: {verdict('batches_short', 1.5)} on",
        f"sentences, {verdict('batches', 1.5)} on the mixed corpus; idle latency ≥ 2× lower: {verdict('latency', 2)}.",
        "On sentences alone both sides are bound by inference, where this CPU gives embedq's ONNX export",
        "little over PyTorch (bench/run.py's in-process rows); the model-export issue works on that.",
        "",
        "A Celery task gets each job's 32 texts unsorted and pads them to the longest, so on the mixed corpus",
        "(1 text in 16 is 256 tokens) most jobs cost 32 × 256 tokens; on sentences alone the gap is what",
        "ONNX Runtime and length-sorted micro-batches give.",
    ]
    return lines


def reingest_lines(again: dict[str, Any] | None) -> list[str]:
    if again is None:
        return []
    return [
        "",
        f"Re-ingestion ({stamp(again)}): a {again['texts']:,}-line Batch API file "
        f"took {again['first_s']:.1f} s, the same file with {again['changed']:,} lines changed {again['second_s']:.1f} s: "
        f"{again['speedup']:.1f}× faster (goal ≥ 5×: {'met' if again['speedup'] >= 5 else 'missed'}); "
        f"{again['unchanged_lines_equal']:,} of {again['unchanged_lines']:,} unchanged lines bitwise equal.",
    ]


def cache_gate_lines(
    peer: dict[str, Any] | None, budget: dict[str, Any] | None, fleet: dict[str, Any] | None
) -> list[str]:
    """The cache against infinity's own over HTTP, and the standing gates rerun with the cache on."""
    lines = []
    if peer is not None:
        row = peer["row"]
        spread = ", ".join(f"{ratio:.2f}" for ratio in row["ratios"])
        lines += [
            "",
            f"The same workload over HTTP against infinity (measured by {stamp(peer)}): {peer['peer']}, "
            f"{peer['calls']:,} one-text requests from 16 clients, each run's sentences new to both caches: embedq "
            f"{row['embedq']:,.0f} req/s (hit ratio {row['embedq_hit_ratio']:.1%}), infinity {row['infinity']:,.0f} "
            f"req/s: **{row['ratio']:.2f}×** ({spread}; goal ≥ 1.5×: {'met' if row['ratio'] >= 1.5 else 'missed'}).",
        ]
    if budget is not None:
        concurrent, added = budget["concurrent"], budget["queue_added_us"]
        lines += [
            "",
            f"The latency budget with the cache on (`--cache`, measured by {stamp(budget)}; every text "
            f"new): the queue adds {added:,.0f} µs to the floor (gate ≤ 1,500: {'met' if added <= 1500 else 'missed'}); "
            f"16 concurrent clients p99/p50 {concurrent['ratio']:.2f} (gate ≤ 3: "
            f"{'met' if concurrent['ratio'] <= 3 else 'missed'}).",
        ]
    if fleet is not None:
        job = fleet["embedq_single_text_job"]
        lines += [
            "",
            f"What a job costs Redis with the cache on (`--cache`, measured by {stamp(fleet)}; every text new): "
            f"{job['commands_per_job']:.1f} commands and {job['redis_cpu_us_per_job']:.0f} µs of Redis CPU per "
            f"single-text job (gate ≤ 25 commands: {'met' if job['commands_per_job'] <= 25 else 'missed'}), "
            f"{fleet['embedq_per_text_in_jobs_of_32']['commands_per_job']:.1f} per text in jobs of 32.",
        ]
    return lines


def cache_section(
    cache: dict[str, Any],
    again: dict[str, Any] | None = None,
    peer: dict[str, Any] | None = None,
    budget: dict[str, Any] | None = None,
    fleet: dict[str, Any] | None = None,
) -> list[str]:
    one, zipf, never = cache["one_text"], cache["zipf"], cache["never_repeating"]
    rates, per_job = zipf["calls_per_s"], never["redis_per_job"]

    def verdict(value: float, goal: float, higher: bool = True) -> str:
        return "met" if (value >= goal if higher else value <= goal) else "missed"

    client_hit = one["client_cached"]["p50_ms"]
    return [
        "## The fleet-wide cache — `./dev bench cache` (bench/cache.py)",
        "",
        f"Measured by {stamp(cache)}. 2 workers and the gateway (one API key) on a private redis-server;",
        "every other section runs with the cache off (its peers compute every text, so does embedq there).",
        "",
        "| one short text, idle fleet | cached p50 / p95 (ms) | never seen p50 / p95 (ms) | never seen ÷ cached (p50) |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {label} | {one[f'{way}_cached']['p50_ms']:.2f} / {one[f'{way}_cached']['p95_ms']:.2f} | "
            f"{one[f'{way}_new']['p50_ms']:.2f} / {one[f'{way}_new']['p95_ms']:.2f} | "
            f"{one[f'{way}_new_over_cached_p50']:.1f}× |"
            for way, label in (("client", "Python client"), ("http", "gateway (base64)"))
        ),
        "",
        f"Goals: a hit ≤ 1 ms p50 through the Python client: {client_hit:.2f} ms, "
        f"{verdict(client_hit, 1.0, higher=False)}; ≥ 5× lower than a miss: {one['client_new_over_cached_p50']:.1f}×, "
        f"{verdict(one['client_new_over_cached_p50'], 5)}.",
        "",
        f"A search-like workload: {cache['calls']:,} one-text calls from 16 threads drawn from {cache['distinct']:,} "
        f"distinct STS-B sentences by a Zipf law (s = {cache['zipf_s']}), the cache cleared before each run: hit "
        f"ratio {zipf['hit_ratio']:.1%}.",
        "",
        "| calls/s | cache on | cache off | on ÷ off |",
        "| --- | ---: | ---: | ---: |",
        f"| Python client | {rates['client_on']:,.0f} | {rates['client_off']:,.0f} | {zipf['client_on_over_off']:.2f}× |",
        f"| gateway | {rates['http_on']:,.0f} | {rates['http_off']:,.0f} | {zipf['http_on_over_off']:.2f}× |",
        "",
        f"Goal ≥ 3× through the client: {verdict(zipf['client_on_over_off'], 3)}.",
        "",
        f"Traffic that never repeats (every text new), cache on vs off: {never['calls_per_s']['on']:,.0f} vs "
        f"{never['calls_per_s']['off']:,.0f} calls/s from 16 threads (cost {never['throughput_cost']:.1%}; goal ≤ 5%: "
        f"{verdict(never['throughput_cost'], 0.05, higher=False)}), idle p50 {never['idle_p50_added_ms']:+.3f} ms "
        f"(goal ≤ +0.3: {verdict(never['idle_p50_added_ms'], 0.3, higher=False)}); Redis per single-text job "
        f"{per_job['on']['commands']:.1f} vs {per_job['off']['commands']:.1f} commands (the cache's look-up and "
        f"write: +{per_job['on']['commands'] - per_job['off']['commands']:.1f}; the standing gate is bench/fleet.py's "
        f"count, below), {per_job['on']['cpu_us']:.0f} vs {per_job['off']['cpu_us']:.0f} µs of its CPU.",
        *reingest_lines(again),
        *cache_gate_lines(peer, budget, fleet),
    ]


def shards_section(shards: dict[str, Any]) -> list[str]:
    layouts = shards["layouts"]
    lines = [
        "## Sharded queues on one Redis — `./dev bench shards` (bench/shards.py)",
        "",
        f"Measured by {stamp(shards)}. The same {shards['workers']}-worker service with 1, 3 and 6 shards "
        "(QUEUE_SHARDS), each on a private redis-server of its own, the cache off, every text new; alternating, "
        f"medians of {shards['repeats']}. On a Redis Cluster the same scripts run spread over its primaries: "
        "the per-job costs here are what they would share. Under load a pass takes jobs of one shard only, so "
        "the same traffic split N ways makes smaller passes whose fixed costs fewer jobs share; one caller on an "
        "idle fleet (calls 0.2 s apart, the idle workers' looks between them counted) pays about the same on "
        "every layout.",
        "",
        "| shards | single-text jobs/s (16 threads) | texts/s, jobs of 32 (4 threads) | commands per single-text job "
        "| Redis CPU per single-text job (µs) | commands per text, jobs of 32 | one text idle, p50 (ms) "
        "| commands per idle call |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for count, row in layouts.items():
        lines.append(
            f"| {count} | {row['single_text_jobs_per_s']:,.0f} | {row['texts_per_s_in_jobs_of_32']:,.0f} | "
            f"{row['commands_per_single_text_job']:.1f} ({row['commands_vs_one_shard']:.2f}×) | "
            f"{row['redis_cpu_us_per_single_text_job']:.0f} | {row['commands_per_text_in_jobs_of_32']:.2f} | "
            f"{row['idle_p50_ms']:.2f} | {row['commands_per_idle_call']:.1f} |"
        )
    return lines


CLUSTER_LAYOUTS = {
    "standalone": "standalone Redis",
    "cluster_3_shards": "Cluster, 3 shards",
    "cluster_6_shards": "Cluster, 6 shards",
}
CLUSTER_WORKLOADS = {"single_text": "single-text", "jobs_of_32_per_text": "jobs of 32"}
CLUSTER_COST_GOAL = 1.2  # issue 25: per-job commands and CPU summed over the primaries, at most this × standalone
CLUSTER_SHARE_SLACK = 0.2  # each of the primaries within ±20 % of an even share
CLUSTER_IDLE_GOAL_MS = 0.5  # one text's p50 on an idle fleet, at most this much over standalone
CLUSTER_HIT_RATIO_GOAL = 0.9  # the cache's hit ratio on a Cluster, at least this × standalone's


def cluster_goals(cluster: dict[str, Any]) -> list[str]:
    """Each of issue 25's goals with its measured value and verdict, a line each."""
    layouts = cluster["layouts"]
    primaries = len(layouts["cluster_3_shards"]["single_text"]["redis_cpu_us"]["shares"])
    lines = []
    for name in ("cluster_3_shards", "cluster_6_shards"):
        row = layouts[name]
        ratios = {
            f"{label} {cost}": row[workload][key]["vs_standalone"]
            for workload, label in CLUSTER_WORKLOADS.items()
            for key, cost in (("commands", "commands"), ("redis_cpu_us", "CPU"))
        }
        costs = [f"{what} {ratio:.2f}×" for what, ratio in ratios.items()]
        worst = max(ratios.values())
        shares = [share for workload in CLUSTER_WORKLOADS for share in row[workload]["redis_cpu_us"]["shares"]]
        spread = max(abs(share * primaries - 1) for share in shares)
        idle = row["idle_p50_vs_standalone_ms"]
        lines.append(
            f"- {CLUSTER_LAYOUTS[name]}: cost against standalone {', '.join(costs)} (goal ≤ {CLUSTER_COST_GOAL}×: "
            f"{'met' if worst <= CLUSTER_COST_GOAL else 'missed'}); the busiest or idlest primary {spread:.0%} off an "
            f"even share (goal ±{CLUSTER_SHARE_SLACK:.0%}: {'met' if spread <= CLUSTER_SHARE_SLACK else 'missed'}); idle "
            f"p50 {idle:+.2f} ms (goal ≤ +{CLUSTER_IDLE_GOAL_MS} ms: {'met' if idle <= CLUSTER_IDLE_GOAL_MS else 'missed'})."
        )
    alone, spread_ratio = layouts["standalone"]["zipf_hit_ratio"], layouts["cluster_3_shards"]["zipf_hit_ratio"]
    kept = spread_ratio / alone
    lines.append(
        f"- The cache's hit ratio on bench/cache.py's Zipf draws (a cold cache, 16 threads): standalone {alone:.1%}, "
        f"Cluster with 3 shards {spread_ratio:.1%} ({kept:.2f}×; goal within 10%: "
        f"{'met' if kept >= CLUSTER_HIT_RATIO_GOAL else 'missed'})."
    )
    return lines


def cluster_ceiling_table(cluster: dict[str, Any]) -> list[str]:
    per_worker = cluster["per_worker_single_text_jobs_per_s"]
    lines = [
        f"| primaries | single-text jobs/s at the busiest primary's one core | workers at {per_worker:,.0f} jobs/s "
        "each | from |",
        "| ---: | ---: | ---: | --- |",
    ]
    for row in cluster["ceilings"]:
        lines.append(f"| {row['primaries']} | {row['jobs_per_s']:,.0f} | {row['workers']:,.0f} | {row['how']} |")
    return lines


def cluster_section(cluster: dict[str, Any]) -> list[str]:
    layouts = cluster["layouts"]

    def cost(row: dict[str, Any], workload: str, name: str, digits: int) -> str:
        measured = row[workload][name]
        return f"{measured['per_job']:.{digits}f} ({measured['vs_standalone']:.2f}×)"

    def shares(row: dict[str, Any], workload: str) -> str:
        return ", ".join(f"{share:.2f}" for share in row[workload]["redis_cpu_us"]["shares"])

    lines = [
        "## Redis Cluster — `./dev bench cluster` (bench/cluster.py)",
        "",
        f"Measured by {stamp(cluster)}. The same {cluster['workers']}-worker service on a standalone redis-server "
        "(1 shard) and on private 3-primary Redis Clusters (no replicas) with 3 and 6 shards, all on this one "
        f"machine, the cache off, every text new; alternating, medians of {cluster['repeats']} ({cluster['jobs']:,} "
        "single-text jobs from 16 threads; the 512-text mixed corpus in jobs of 32 from 4 threads). Commands and "
        "CPU are INFO commandstats and INFO cpu deltas summed over the primaries; a primary's share is its part "
        "of that CPU. One machine's 2 cores cannot show a Cluster's throughput: what predicts it is what a job "
        "costs all primaries together and how evenly they share it.",
        "",
        "| layout | single-text jobs/s | texts/s, jobs of 32 | commands per single-text job | Redis CPU per "
        "single-text job (µs) | primaries' CPU shares, single-text | commands per text, jobs of 32 | Redis CPU "
        "per text, jobs of 32 (µs) | primaries' CPU shares, jobs of 32 | one text idle, p50 (ms) |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for name, row in layouts.items():
        alone = name == "standalone"
        idle = "" if alone else f" ({row['idle_p50_vs_standalone_ms']:+.2f})"
        lines.append(
            f"| {CLUSTER_LAYOUTS[name]} | {row['single_text_jobs_per_s']:,.0f} | {row['texts_per_s_in_jobs_of_32']:,.0f} "
            f"| {cost(row, 'single_text', 'commands', 1)} | {cost(row, 'single_text', 'redis_cpu_us', 0)} "
            f"| {'—' if alone else shares(row, 'single_text')} | {cost(row, 'jobs_of_32_per_text', 'commands', 2)} "
            f"| {cost(row, 'jobs_of_32_per_text', 'redis_cpu_us', 1)} | {'—' if alone else shares(row, 'jobs_of_32_per_text')} "
            f"| {row['idle_p50_ms']:.2f}{idle} |"
        )
    lines += ["", "Issue 25's goals:", "", *cluster_goals(cluster), ""]
    lines += [
        "The fleet's ceiling: the single-text jobs/s at which the busiest primary spends one core (measured CPU per "
        "job; 3 primaries from the 6-shard run, with its imbalance; more primaries projected at 2 shards each with "
        "the same imbalance), and the workers it takes at the standalone run's rate per worker (2 workers sharing "
        "2 cores with everything else here: a worker on cores of its own does more, so the count is an upper bound).",
        "",
        *cluster_ceiling_table(cluster),
    ]
    return lines


def cluster_readme_block(cluster: dict[str, Any]) -> str:
    """README's Redis Cluster figures: the goals' verdicts and the ceiling table."""
    lines = [
        f"Measured by {stamp(cluster)} (3 primaries on one machine; BENCHMARKS.md has the whole table):",
        "",
        *cluster_goals(cluster),
        "",
        *cluster_ceiling_table(cluster),
    ]
    return "\n".join(lines)


def between(text: str, begin: str, end: str, block: str) -> str:
    """`text` with what lies between the `begin` and `end` markers replaced by `block`."""
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n\n" + block + "\n\n" + text[stop:]


def readme_block(
    run: dict[str, Any] | None,
    quality: dict[str, Any] | None,
    memory: dict[str, Any] | None,
    fleet: dict[str, Any] | None,
    peer: dict[str, Any] | None,
    lanes: dict[str, Any] | None,
    export: dict[str, Any] | None,
    int8_runs: tuple[dict[str, Any] | None, ...],
    gateway: dict[str, Any] | None,
    infinity: dict[str, Any] | None,
    batch: dict[str, Any] | None,
    budget: dict[str, Any] | None,
) -> str:
    lines = []
    if export:
        shipped = next(row for row in export["candidates"] if row["ships"])
        lines.append(
            f"- **fp32 export** (`bench/export.py`): the shipped graph (TorchScript exporter, eager attention) embeds "
            f"batches of 32 at **{shipped['batch32_1t_vs_embedq_0.2']:.2f}×** (1 thread) and "
            f"**{shipped['batch32_2t_vs_embedq_0.2']:.2f}×** (2 threads) embedq 0.2's dynamo export, vectors at cosine ≥ "
            f"{shipped['cosine_to_sentence_transformers_min']:.7f} to sentence-transformers'."
        )
    for int8 in (run_int8 for run_int8 in int8_runs if run_int8):
        shipped = next(row for row in int8["variants"] if row.get("ships", "ships" in row["variant"]))
        naive = int8["variants"][0]
        lines.append(
            f"- **int8** (`bench/int8.py`, {cpu(int8)}): on held-out sentences, cosine to fp32 p1 "
            f"**{shipped['cosine_p1']:.4f}** (median {shipped['cosine_median']:.4f}), top-10 neighbour overlap "
            f"**{shipped['neighbour_overlap']:.3f}**, STS-B {shipped['stsb']:.2f} vs fp32 {int8['stsb_fp32']:.2f}, at "
            f"{shipped['speedup_1t']:.2f}× (1 thread) / {shipped['speedup_2t']:.2f}× (2 threads) fp32's speed; "
            f"embedq 0.2's copy: p1 {naive['cosine_p1']:.4f}, overlap {naive['neighbour_overlap']:.3f}."
        )
    if quality:
        lines.append(
            f"- **Quality** (`bench/quality.py`): STS Benchmark test embedded through the queue by 2 workers: "
            f"cosine Spearman **{quality['through_queue']:.2f}** (published: {quality['published']:.2f}); "
            f"every vector at cosine ≥ {quality['cosine_to_sentence_transformers_min']:.7f} to "
            "sentence-transformers'" + (f"; int8 copy {quality['int8']:.2f}." if "int8" in quality else ".")
        )
    if run:
        rows = rows_by_key(run)
        latency = run["latency"]
        lines.append(
            f"- **Throughput** (`bench/run.py`): against sentence-transformers given the whole corpus in one `encode` "
            f"call, embedq's Encoder fed the same texts as jobs of 32 does **{rows['st_b32']['ratio']:.2f}×** its "
            f"texts/s (jobs of 1: {rows['st_b1']['ratio']:.2f}×)"
            + (f", int8 {rows['st_int8']['ratio']:.2f}×" if "st_int8" in rows else "")
            + f"; jobs of 32 through the queue run at {rows['queue_vs_inprocess']['ratio']:.2f}× the in-process "
            f"Encoder; coalescing single-text jobs gives {rows['coalesce_mixed']['ratio']:.2f}× (mixed corpus) and "
            f"{rows['coalesce_short']['ratio']:.2f}× (short queries) the one-job-a-pass rate."
        )
        lines.append(
            f"- **Latency** (`bench/run.py`): one short text, enqueue → result: p50 {latency['p50_ms']:.2f} ms, "
            f"p95 {latency['p95_ms']:.2f} ms, of which {latency['overhead_p50_ms']:.2f} ms is the queue."
        )
    if budget:
        lines.append(
            f"- **Latency budget** (`bench/latency_budget.py`, {cpu(budget)}): on an idle fleet one short text's "
            f"`embed()` takes {budget['queue_added_us']:,.0f} µs more than the same text through an in-process "
            f"Encoder (goal ≤ 1,500 µs); 16 concurrent clients p99/p50 {budget['concurrent']['ratio']:.2f}."
        )
    if fleet:
        rows, single = fleet["remote_vs_local"], fleet["embedq_single_text_job"]
        lines.append(
            f"- **Redis ~{fleet['rtt_ms']:g} ms away** (`bench/fleet.py`): single-text jobs at {rows['singles']['ratio']:.2f}× "
            f"and jobs of 32 at {rows['batches']['ratio']:.2f}× the local throughput; one text p50 "
            f"+{rows['latency']['added_rtts_p50']:.1f} RTT; a single-text job costs Redis {single['commands_per_job']:.0f} commands "
            f"and {single['redis_cpu_us_per_job']:.0f} µs CPU ({fleet['single_text_job_vs_plain_rq']['redis_cpu']:.2f}× plain rq's no-op job)."
        )
    if lanes:
        lines.append(
            f"- **Priority lanes** (`bench/lanes.py`): beside a {lanes['texts']:,}-text bulk `embed-file`, one-text "
            f"interactive requests p50 {lanes['interactive_under_bulk']['p50_ms']:.2f} ms (idle fleet "
            f"{lanes['interactive_idle']['p50_ms']:.2f} ms, one bulk micro-batch {lanes['bulk_micro_batch_ms']:.1f} ms); "
            f"bulk keeps {lanes['bulk_ratio']:.2f}× its throughput alone."
        )
    if gateway:
        single, idle = gateway["single_text_16_clients"], gateway["idle_latency_p50_ms"]
        lines.append(
            f"- **HTTP gateway** (`bench/gateway.py`): one-text requests from {gateway['concurrent_clients']} clients at "
            f"{single['ratio']:.2f}× the Python client's rate on the same 2 cores (goal 0.8×; {single['httpx_ratio']:.2f}× "
            f"when httpx drives it); idle one-text p50 +{idle['added']:.2f} ms (goal ≤ +{GATEWAY_ADDED_MS} ms; httpx "
            f"+{idle['httpx_added']:.2f} ms{floor_note(idle.get('floors'))}); one gateway process answers "
            f"~{gateway['ceiling']['rps_per_gateway_core']:.0f} req/s per core."
        )
    if infinity:
        rows = infinity["rows"]
        lines.append(
            f"- **Against infinity** (`bench/infinity_peer.py`, {infinity['peer']}, HTTP on both sides): "
            f"{rows['single_text_16_clients']['ratio']:.2f}× its rate on one-text requests from 16 clients, "
            f"{rows['batches_of_32_8_clients']['ratio']:.2f}× on requests of 32 texts, "
            f"{rows['idle_latency_p50_ms']['ratio']:.2f}× lower idle one-text latency."
        )
    if peer:
        rows = peer["rows"]
        lines.append(
            f"- **Against Celery + sentence-transformers** (`bench/celery_peer.py`): "
            f"{rows['batches_short']['ratio']:.2f}× its throughput on jobs of 32 sentences "
            f"({rows['batches']['ratio']:.2f}× with 1 long text in 16), {rows['singles']['ratio']:.2f}× on single-text jobs "
            f"from {peer['concurrency']} concurrent requests, {rows['latency']['ratio']:.2f}× lower idle one-text latency."
        )
    if memory:
        workers = ", ".join(f"{w['rss_after_100_mb']:.0f} → {w['rss_after_all_mb']:.0f} MB" for w in memory["workers"])
        lines.append(
            f"- **Memory** (`bench/memory.py`): worker RSS after 100 and after {memory['workers'][0]['jobs']:,} "
            f"mixed-length jobs: {workers}."
        )
    if batch:
        rates = batch["texts_per_s"]
        lines.append(
            f"- **Batch API** (`bench/batch.py`, {cpu(batch)}): a {batch['texts']:,}-text batch, upload to downloaded "
            f"output, at **{rates['batch'] / max(rates['embed_file'], rates['requests_8x32']):.2f}×** the faster of "
            f"`embedq embed-file` ({rates['embed_file']:,.0f} texts/s) and /v1/embeddings requests of 32 from 8 threads "
            f"({rates['requests_8x32']:,.0f}); one-text interactive p50 while it runs "
            f"{batch['interactive_during_batch']['p50_ms']:.0f} ms (beside `embed-file`: "
            f"{batch['interactive_during_embed_file']['p50_ms']:.0f} ms; idle {batch['interactive_idle']['p50_ms']:.1f} ms)."
        )
    lines += ["", "Full tables, method and what each row means: [BENCHMARKS.md](BENCHMARKS.md)."]
    return "\n".join(lines)


def latency_budget_section(budget: dict[str, Any], before: dict[str, Any] | None = None) -> list[str]:
    steps = budget["budget_us_p50"]
    rounds = budget.get("rounds", 1)
    elsewhere = ""
    if before is not None and cpu(before) != cpu(budget):  # a run on another CPU says nothing of this code
        elsewhere = f" The last run of earlier code ({before['code']}) was on {cpu(before)}: not compared."
        before = None
    lines = [
        "## One text's latency budget — `./dev bench latency_budget` (bench/latency_budget.py)",
        "",
        f"Measured by {stamp(budget)}. An idle fleet of {budget['workers']} workers (1 ONNX "
        f"thread each), a private local Redis, one new short text at a time, p50 of {budget['samples']} each"
        + (f", mean of {rounds} runs" if rounds > 1 else "")
        + (f"; before: {before['code']}, run in turn with the code now (same script, same machine)" if before else "")
        + "."
        + elsewhere,
        "",
        "| step | µs (p50) before | now |" if before else "| step | µs (p50) |",
        "| --- | ---: | ---: |" if before else "| --- | ---: |",
    ]
    for step, micros in steps.items():
        was = f"{before['budget_us_p50'][step]:,.0f} | " if before and step in before["budget_us_p50"] else ""
        lines.append(f"| {step} | {was}{micros:,.0f} |")
    added = budget["queue_added_us"]
    earlier = f" (before: {before['queue_added_us']:,.0f} µs)" if before else ""
    lines += [
        "",
        f"The queue adds {added:,.0f} µs to the floor{earlier}; issue 23's goal: ≤ 1,500 µs: "
        f"{'met' if added <= 1500 else 'missed'}. Redis' own time per text, from its slow log at threshold 0 in a "
        "run of its own (logging slows each command a little; a script's time includes the commands it calls, "
        "which the log also lists on their own):",
        "",
        "| script or command | µs per text |",
        "| --- | ---: |",
    ]
    lines += [f"| {name} | {micros:.1f} |" for name, micros in list(budget["redis_us_per_text"].items())[:8]]
    if concurrent := budget.get("concurrent"):
        lines += [
            "",
            f"{concurrent['clients']} concurrent clients sending one new text each ({concurrent['requests']:,} "
            f"requests): p50 {concurrent['p50_us'] / 1000:.1f} ms, p99 {concurrent['p99_us'] / 1000:.1f} ms, "
            f"p99/p50 {concurrent['ratio']:.2f} (goal ≤ 3: {'met' if concurrent['ratio'] <= 3 else 'missed'}).",
        ]
    return lines


def main() -> int:
    run, quality, memory, fleet = load("run"), load("quality"), load("memory"), load("fleet")
    peer, lanes, export, int8 = load("celery_peer"), load("lanes"), load("export"), load("int8_vnni")
    gateway, infinity, aof, soak = load("gateway"), load("infinity_peer"), load("aof_loss"), load("soak")
    batch, front_door, budget = load("batch"), load("front_door"), load("latency_budget")
    int8_avx2, cache, shards, cluster = load("int8_avx2"), load("cache"), load("shards"), load("cluster")
    page = [
        "# Benchmarks",
        "",
        "Made by `./dev bench report` (bench/report.py) from the results the benchmark scripts saved in",
        "bench/results/; each section names the script and run that measured it. Ratios come from runs side by",
        "side in one process run (A and B alternate in every repeat), never from separate runs.",
    ]
    sections = (
        quality and quality_section(quality),
        export and export_section(export),
        int8 and int8_section(int8),
        int8_avx2 and int8_section(int8_avx2),
        run and run_section(run),
        budget and latency_budget_section(budget, load("latency_budget_before")),
        fleet and fleet_section(fleet, load("fleet_before_passes")),
        lanes and lanes_section(lanes),
        gateway and gateway_section(gateway),
        infinity and infinity_section(infinity),
        batch and batch_section(batch),
        front_door and front_door_section(front_door),
        peer and celery_section(peer),
        cache
        and cache_section(
            cache, load("reingest"), load("infinity_cache"), load("latency_budget_cache"), load("fleet_cache")
        ),
        shards and shards_section(shards),
        cluster and cluster_section(cluster),
        aof and aof_section(aof),
        soak and soak_section(soak),
        memory and memory_section(memory),
    )
    for section in sections:
        if section:
            page += ["", *section]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(page) + "\n")
    readme = (ROOT / "README.md").read_text()
    block = readme_block(
        run, quality, memory, fleet, peer, lanes, export, (int8, int8_avx2), gateway, infinity, batch, budget
    )
    readme = between(readme, README_BEGIN, README_END, block)
    if cluster:
        readme = between(readme, README_CLUSTER_BEGIN, README_CLUSTER_END, cluster_readme_block(cluster))
    (ROOT / "README.md").write_text(readme)
    print("wrote BENCHMARKS.md and README.md's measured block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
