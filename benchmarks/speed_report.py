"""Render ``stilts bench speed`` results: Markdown tables and PNG plots."""

from __future__ import annotations

from pathlib import Path

from stilts.benchmarks import plots, speed_http


def _f(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and v != v:  # NaN
        return "-"
    return f"{v:,.{digits}f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    sep = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _header(results: dict) -> list[str]:
    head = results.get("header", {})
    m = head.get("machine", {})
    v = head.get("versions", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        "# stilts bench speed",
        "",
        f"- created: {head.get('created', '-')}",
        f"- command: `{' '.join(head.get('command') or [])}`",
        f"- machine: {m.get('cpu', '-')}, {m.get('cpu_count', '-')} cores, "
        f"{m.get('memory_gib', '-')} GiB, load average at start {m.get('load_average', '-')}, "
        f"at end {results.get('load_average_end', '-')}",
        f"- CPU flags: {' '.join(m.get('cpu_flags') or []) or '-'}",
        f"- versions: {vers}",
        "- every figure is the median of repeats, systems interleaved round by round; ratios "
        "compare systems timed in the same rounds of this invocation",
        "",
    ]


def _encode(r: dict) -> list[str]:
    lines = [
        "## Encode",
        "",
        f"{r['n']} sentences ({r['mean_tokens']:.1f} tokens each on average, counted with the "
        f"stilts model's tokenizer for every system), median of {r['repeats']}; "
        f"`vs X` = this system's throughput / X's.",
        "",
    ]
    bases = r.get("baselines", [])
    header = ["batch", "system", "sentences/s", "tokens/s"] + [f"vs {b}" for b in bases]
    rows = []
    for bs, row in r["by_batch_size"].items():
        for name, s in row.items():
            rows.append(
                [
                    bs,
                    f"`{name}`",
                    _f(s["sentences_per_second"]),
                    _f(s["tokens_per_second"], 0),
                    *[_x(s["vs"].get(b)) if b != name else "1.00x" for b in bases],
                ]
            )
    return lines + _table(header, rows) + [""]


def _search(r: dict) -> list[str]:
    lines = [
        "## Search",
        "",
        "k=10, one query per call through `VectorIndex.search` (documents fetched as a client "
        "gets them); QPS batch = batched throughput; recall@10 vs exact search on held-out "
        f"queries; vectors: {r.get('vectors', 'synthetic (clustered)')}.",
        "",
    ]
    header = [
        "vectors",
        "kind",
        "factory",
        "build s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "QPS (1 query/call)",
        "QPS batch",
        "recall@10",
        "p50 vs flat",
    ]
    rows = []
    for n, size in r["by_size"].items():
        for kind, s in size["kinds"].items():
            lat = s["latency_ms"]
            rows.append(
                [
                    f"{int(n):,}",
                    kind,
                    f"`{s.get('factory')}`",
                    _f(s["build_seconds"]),
                    _f(lat["p50"], 2),
                    _f(lat["p95"], 2),
                    _f(lat["p99"], 2),
                    _f(s["qps_sequential"], 0),
                    _f(s["qps_batch"], 0),
                    _f(s.get(f"recall_at_{size['k']}"), 3),
                    _x(s.get("p50_vs_flat")),
                ]
            )
    return lines + _table(header, rows) + [""]


def _mining(r: dict) -> list[str]:
    lines = [
        "## Mining",
        "",
        f"{r['pair']} ({r['split']}): {r['n_src']} x {r['n_tgt']} sentences, {r['n_gold']} gold "
        f"pairs, k={r['k']}, {r['precision']}, median of {r['repeats']}. F1 = oracle F1 of all "
        "mined pairs against the gold file.",
        "",
    ]
    rows = []
    for name, s in r["systems"].items():
        rows.append([f"`{name}`", _f(s["median_seconds"], 2), _f(s.get("f1_oracle"), 3)])
    lines += _table(["system", "seconds", "F1 oracle"], rows)
    lines += [
        "",
        f"- `stilts mine` overhead vs encode + kNN: **{_x(r['overhead_vs_encode_knn'])}** "
        "(goal <= 1.10)",
    ]
    if r.get("speedup_vs_sentence_transformers") is not None:
        lines.append(
            f"- `stilts mine` vs the sentence-transformers recipe: "
            f"**{_x(r['speedup_vs_sentence_transformers'])}** faster (goal >= 3x at equal F1)"
        )
    b = r.get("mine_seconds_breakdown") or {}
    if b:
        lines.append(
            "- last `stilts mine` run, seconds by step: "
            + ", ".join(f"{k} {v:.2f}" for k, v in b.items())
        )
    return lines + [""]


def _grpc(r: dict) -> list[str]:
    base = r["baseline"]
    lines = [
        "## gRPC under load",
        "",
        f"Server `{r['server']['address']}` (subprocess, loopback); limits per run: "
        f"{r['max_requests']} requests or {r['max_seconds']} s, deadline "
        f"{r['request_timeout']} s per request. Baselines in this process: offline batch encode "
        f"{_f(base['offline_sentences_per_second'])} sentences/s, one-sentence encode p50 "
        f"{_f(base['single_latency_ms'].get('p50'), 2)} ms.",
        "",
    ]
    if r.get("search_index"):
        lines += [f"Search index: {r['search_index']['documents']} real sentences (flat).", ""]
    header = [
        "workload",
        "concurrency",
        "requests ok",
        "errors",
        "stopped by",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "req/s",
        "vs offline",
        "p50 vs in-process",
        "mean batch (server)",
        "queue ms (server)",
    ]
    rows = []
    for w, by in r["workloads"].items():
        for conc, s in by.items():
            lat = s["latency_ms"]
            d = s["server_metrics"]["derived"]
            errs = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "0"
            rows.append(
                [
                    w,
                    conc,
                    str(s["ok"]),
                    errs,
                    s["stopped_by"],
                    _f(lat.get("p50"), 2),
                    _f(lat.get("p95"), 2),
                    _f(lat.get("p99"), 2),
                    _f(s["throughput"]),
                    _x(s.get("throughput_vs_offline")),
                    _x(s.get("p50_vs_in_process")),
                    _f(d.get("mean_batch_size"), 2),
                    _f(d.get("mean_queue_ms"), 2),
                ]
            )
    return lines + _table(header, rows) + [""]


def _gib(v) -> str:
    return "-" if v is None else f"{v / 2**30:.2f}"


def _scale(r: dict) -> list[str]:
    n, k = r["n"], r["k"]
    v = r["vectors"]
    lines = [
        f"## Scale: {n:,} vectors (dim {r.get('dim', 384)})",
        "",
        f"Vectors: {v['method']}, from {v['real_pairs']:,} encoded real pairs. Real vs derived "
        f"(medians): cosine of a true pair {v['real']['pair_cosine_median']:.3f} vs "
        f"{v['derived']['pair_cosine_median']:.3f}; cosine to the nearest other vector "
        f"{v['real']['nearest_other_cosine_median']:.3f} vs "
        f"{v['derived']['nearest_other_cosine_median']:.3f} (the derived set is denser).",
        f"Raw float32 vectors: {_gib(r['raw_vector_bytes'])} GiB. {r['queries']} queries "
        f"(not indexed), k={k}; latency = one query per call, QPS = batches of 64.",
        "",
    ]
    rows = []
    for kind, s in r["search"].items():
        for mode in ("memory", "mmap"):
            m = s.get(mode)
            if m is None:
                continue
            rss = m["rss_after_queries"]
            rows.append(
                [
                    f"{kind} ({m['storage']})",
                    f"`{s['factory']}`",
                    _f(s["build_seconds"], 0),
                    _f((s.get("training") or {}).get("train_seconds"), 0),
                    _gib(s["build_peak_rss"]),
                    _gib(s["disk_bytes"]),
                    _gib(rss.get("VmRSS")),
                    _gib(rss.get("RssAnon")),
                    _f(m["latency_ms"]["p50"], 2),
                    _f(m["latency_ms"]["p99"], 2),
                    _f(m["qps_batch"], 0),
                    _f(m[f"recall_at_{k}"], 3),
                ]
            )
    lines += _table(
        [
            "kind (lists)",
            "factory",
            "build s",
            "train s",
            "build peak GiB",
            "disk GiB",
            "serve RSS GiB",
            "of it anon GiB",
            "p50 ms",
            "p99 ms",
            "QPS",
            f"recall@{k}",
        ],
        rows,
    )
    lines.append("")
    if r.get("mining"):
        rows = []
        for kind, m in r["mining"].items():
            rows.append(
                [
                    kind,
                    f"{m['n']:,}",
                    str(m.get("nprobe") or "default"),
                    _f(m["wall_seconds"], 0),
                    _f((m.get("summary_seconds") or {}).get("knn"), 0),
                    _gib(m["peak_rss"]),
                    f"{m['pairs']:,}",
                    _f(m["precision_vs_truth"], 3),
                    _f(m["recall_vs_truth"], 3),
                    _f(m["mined_target_in_exact_top4"], 3),
                    _f(m["mined_target_is_exact_top1"], 3),
                ]
            )
        lines += [
            f"### Mining from .npy vector files (`{next(iter(r['mining'].values()))['command']}`)",
            "",
        ]
        lines += _table(
            [
                "--index",
                "per side",
                "--nprobe",
                "wall s",
                "of it k-NN s",
                "peak RSS GiB",
                "pairs",
                "precision (truth)",
                "recall (truth)",
                "in exact top-4",
                "= exact top-1",
            ],
            rows,
        )
        lines.append("")
    if r.get("plan"):
        lines += _plan(r["plan"])
    return lines


def _plan(rows: list[dict]) -> list[str]:
    lines = [
        "### Scale-out estimate (from the figures above; hours of k-NN per node, 2 cores each)",
        "",
    ]
    body = [
        [
            f"{p['per_side']:,}",
            str(p["nodes"]),
            p["kind"],
            _f(p["knn_hours_per_node"], 2),
            _f(p["index_gib_per_node"], 2),
            _f(p["received_gib_per_node"], 1),
            _f(p["sent_gib_per_node"], 2),
        ]
        for p in rows
    ]
    lines += _table(
        [
            "per side",
            "nodes",
            "k-NN",
            "k-NN hours/node",
            "index GiB/node",
            "in GiB/node",
            "out GiB/node",
        ],
        body,
    )
    return lines + [""]


def markdown(results: dict, plot_paths: list[Path] | None = None, base: Path | None = None) -> str:
    lines = _header(results)
    s = results.get("sections", {})
    if "encode" in s:
        lines += _encode(s["encode"])
    if "process" in s:
        from stilts.benchmarks import speed_process

        lines += speed_process.markdown(s["process"])
    if "search" in s:
        lines += _search(s["search"])
    if "mining" in s:
        lines += _mining(s["mining"])
    if "grpc" in s:
        lines += _grpc(s["grpc"])
    if "http" in s:
        lines += speed_http.table(s["http"])
    if "scale" in s:
        lines += _scale(s["scale"])
    lines += plots.markdown_section(plot_paths, base)
    return "\n".join(lines)


def write_plots(results: dict, out_dir: Path, stem: str) -> list[Path]:
    s = results.get("sections", {})
    paths = []
    if "encode" in s:
        e = s["encode"]["by_batch_size"]
        bss = list(e)
        names = list(next(iter(e.values())))
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_encode.png",
                [f"batch {b}" for b in bss],
                {n: [e[b][n]["sentences_per_second"] for b in bss] for n in names},
                "Encode throughput",
                "sentences / s",
            )
        )
    if "search" in s:
        cats, p50, p99 = [], [], []
        for n, size in s["search"]["by_size"].items():
            for kind, r in size["kinds"].items():
                cats.append(f"{kind} {int(n) // 1000}k")
                p50.append(r["latency_ms"]["p50"])
                p99.append(r["latency_ms"]["p99"])
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_search_latency.png",
                cats,
                {"p50": p50, "p99": p99},
                "Search latency (k=10, one query per call)",
                "ms",
            )
        )
    if "mining" in s:
        m = s["mining"]["systems"]
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_mining.png",
                list(m),
                {"seconds": [v["median_seconds"] for v in m.values()]},
                f"Mining {s['mining']['pair']}: wall time",
                "seconds",
            )
        )
    if "grpc" in s:
        g = s["grpc"]["workloads"]
        concs = s["grpc"]["concurrencies"]
        series = {}
        for w, by in g.items():
            for q in ("p50", "p95", "p99"):
                series[f"{w} {q}"] = [
                    by.get(str(c), {}).get("latency_ms", {}).get(q) for c in concs
                ]
        paths.append(
            plots.lines(
                out_dir / f"{stem}_grpc_latency.png",
                concs,
                series,
                "gRPC latency vs concurrency",
                "concurrent clients",
                "ms",
                logx=True,
                logy=True,
            )
        )
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_grpc_throughput.png",
                [str(c) for c in concs],
                {w: [by.get(str(c), {}).get("throughput") for c in concs] for w, by in g.items()},
                "gRPC throughput by concurrency",
                "requests / s",
            )
        )
    return paths
