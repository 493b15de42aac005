"""``stilts bench``: the flags of the benchmark harnesses (what they run: :mod:`.commands`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stilts.benchmarks import commands
from stilts.benchmarks.commands import BASELINES, DEFAULT_DEV_PACK, SECTIONS
from stilts.cliutil import env_flag, precision_flag
from stilts.records import TEXT_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="accuracy and speed benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")

    p = bsub.add_parser(
        "encode",
        help="encoder throughput: stilts q4/int8/fp32 vs sentence-transformers",
        description="Throughput of stilts at every precision the model holds (q4, int8, fp32) "
        "and sentence-transformers (the same "
        "checkpoint in PyTorch) on the same sentences in one run; median of --repeats, "
        "printed as sentences/s and as ratios to sentence-transformers.",
    )
    p.add_argument("--n", type=int, default=2000, help="number of sentences")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per system (median)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch, all systems")
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="stilts model name or dir")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="transformers checkpoint for the baseline (default: the default model's checkpoint)",
    )
    p.add_argument(
        "--tatoeba",
        default=str(Path(DEFAULT_DEV_PACK) / "tatoeba"),
        help="Tatoeba-layout dir (<xx>-en.tsv) to draw sentences from, round-robin over languages",
    )
    p.add_argument(
        "--input", default=None, help="instead: a sentence file (one per line or id<TAB>sentence)"
    )
    p.add_argument("--no-baseline", action="store_true", help="skip sentence-transformers")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.set_defaults(func=commands.cmd_encode)

    _register_accuracy(bsub)
    _register_speed(bsub)
    _register_routes(bsub)
    _register_threshold(bsub)
    _register_fillers(bsub)
    _register_large_import(bsub)


def _register_large_import(bsub: argparse._SubParsersAction) -> None:
    from stilts.benchmarks.large_import import SHAPES, STEPS

    p = bsub.add_parser(
        "large-import",
        help="a model over 2 GiB (multilingual-e5-large's shapes): import, route, serve; "
        "time and peak RSS of each step",
        description="Builds a random-weight XLM-R of multilingual-e5-large's shapes as a "
        "sentence-transformers directory in --work-dir, imports it (external-data graphs, "
        "parity with SentenceTransformer.encode within 1e-5), chooses its CPU route and loads "
        "it as stilts serve does; each step runs in its own process and reports its seconds and "
        "peak RSS. Needs about 9 GB of disk in --work-dir and 6 GB of memory.",
    )
    p.add_argument(
        "--work-dir",
        required=True,
        help="folder for the built model, the imported one (STILTS_HOME=<dir>/home) and the "
        "step figures; created if missing",
    )
    for key, value in SHAPES.items():
        p.add_argument(
            f"--{key}", type=int, default=value, help=f"model shape: {key} (default {value})"
        )
    p.add_argument(
        "--max-seq-length", type=int, default=512, help="the model's max_seq_length (default 512)"
    )
    p.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"comma-separated steps to run, in order (default {','.join(STEPS)}; later steps "
        "reuse what earlier runs left in --work-dir)",
    )
    env_flag(
        p,
        "--threads",
        env="STILTS_THREADS",
        default=None,
        type=int,
        help="intra-op threads of the encoder (default: every core)",
    )
    p.add_argument("--output", default=None, help="write the JSON results here")
    p.set_defaults(func=commands.cmd_large_import)


# --- accuracy ---------------------------------------------------------------------------------


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="results JSON to write")
    p.add_argument("--report", default=None, help="Markdown report to write (also printed)")
    p.add_argument(
        "--plots", default=None, help="directory for the PNG charts (default: beside --output)"
    )
    p.add_argument("--no-plots", action="store_true", help="write no PNG charts")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no printed report")


def _register_accuracy(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "accuracy",
        help="Tatoeba top-1 accuracy and BUCC mining F1, several models side by side",
        description="Tatoeba (pack layout <xx>-en.tsv or XTREME tatoeba.<xx>-eng.<xx>/.eng): "
        "top-1 accuracy xx->en and en->xx with cosine and margin scoring. BUCC 2017 layout "
        "(<xx>-en.<split>.{<xx>,en,gold}): all mined candidates scored, P/R/F1 at the oracle "
        "(F1-optimal) threshold and at a calibrated one chosen on other data (the sample split, "
        "else --calibrate-on, else the other pairs) and applied unchanged. Every --model and the "
        "baselines (same weights in sentence-transformers; USE-multilingual v3) in one table with "
        "deltas vs the first --model. Without --tatoeba and --bucc, the dev pack is used.",
    )
    p.add_argument(
        "--model",
        action="append",
        default=None,
        help="stilts model name or directory; repeat to compare (the first is the reference; "
        "default: default)",
    )
    p.add_argument("--tatoeba", default=None, help="Tatoeba directory (either layout)")
    p.add_argument("--bucc", default=None, help="BUCC 2017 directory (pairs in it or in <xx>-en/)")
    p.add_argument(
        "--calibrate-on",
        default=None,
        help="BUCC-layout directory to choose the calibrated threshold on, for pairs without a "
        "sample split (default: leave-one-out over the other pairs)",
    )
    precision_flag(
        p,
        "ONNX graph of the stilts models: all (every graph the model holds, side by side, "
        "fp32 first as the reference), auto (the model's default) or one precision",
        default="all",
        extra_choices=("all",),
    )
    p.add_argument(
        "--kind",
        default="bitext",
        choices=TEXT_KINDS,
        help="manifest prefix used on both sides (bitext: translation retrieval)",
    )
    p.add_argument(
        "--languages",
        default=None,
        help="Tatoeba languages, comma-separated; @use = USE's 15 non-English languages, "
        "@bucc = de,es,fr,ja,ru,zh (default: all)",
    )
    p.add_argument(
        "--bucc-languages",
        default=None,
        help="BUCC pairs (xx codes), comma-separated (default: all)",
    )
    p.add_argument(
        "--max-pairs",
        type=int,
        default=None,
        help="first N Tatoeba pairs per language (default all)",
    )
    p.add_argument(
        "--bucc-max",
        type=int,
        default=None,
        help="subsample each BUCC set to N xx sentences, keeping the gold/distractor shares",
    )
    p.add_argument(
        "--baseline",
        action="append",
        choices=BASELINES,
        default=None,
        help="baselines to add: st (same weights in sentence-transformers), use (USE-multilingual "
        "v3); default: both when installed",
    )
    p.add_argument("--no-baselines", action="store_true", help="compare the --models only")
    p.add_argument(
        "--vector-cache",
        default=None,
        help="directory of stilts models' vectors per (fingerprint, precision, kind): a text is "
        "encoded once across runs (default: once per run, in memory); vectors are reused only "
        "for the same model files and route",
    )
    p.add_argument(
        "--st-checkpoint",
        default=None,
        help="transformers checkpoint for the st baseline (default: the first model's source)",
    )
    p.add_argument(
        "--scoring",
        default="margin",
        choices=["margin", "cosine"],
        help="headline Tatoeba scoring in results.json (both are always reported)",
    )
    p.add_argument("--k", type=int, default=4, help="neighbours for the margin")
    p.add_argument(
        "--margin", default="ratio", choices=["ratio", "distance"], help="margin function"
    )
    p.add_argument(
        "--retrieval",
        default="max",
        choices=["max", "forward", "backward", "intersect"],
        help="BUCC candidate selection",
    )
    p.add_argument("--batch-size", type=int, default=64, help="encoder batch size")
    _add_output_flags(p)
    p.set_defaults(func=commands.cmd_accuracy)


# --- speed ------------------------------------------------------------------------------------

# full run / --quick run


def _register_speed(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "speed",
        help="encode / search / mining / gRPC-under-load / HTTP-vs-gRPC speed, ratios vs baselines",
        description="Speed, every figure a median of repeats with ratios against a baseline run "
        "in the same invocation: encode (stilts q4/int8/fp32 vs sentence-transformers and "
        "USE-multilingual, by batch size), process (whole `stilts encode` processes of 4,000 "
        "sentences and of one vs USE-multilingual v3: wall and CPU time, peak RSS; `stilts "
        "serve`'s peak RSS), search (latency percentiles, QPS and recall@10 per "
        "index kind on synthetic vectors), mining (`stilts mine` vs encode+kNN and vs the "
        "sentence-transformers recipe on a BUCC pair), gRPC (own server on loopback, bounded "
        "load at several concurrencies, server metrics before/after), HTTP (Embed over the HTTP front "
        "door against gRPC on one server, batch 1 and 32, alternating rounds). --quick: small "
        "sizes.",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes for a run of a few minutes")
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="stilts model name or dir")
    precision_flag(
        p,
        "graph for mining and serving; auto: the model's default (encode times every graph)",
    )
    p.add_argument("--kind", default="bitext", choices=TEXT_KINDS, help="encode prefix")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (3; quick 2)")
    p.add_argument(
        "--baseline",
        action="append",
        choices=("st", "use"),
        default=None,
        help="baselines (default: st and use)",
    )
    p.add_argument("--no-baselines", action="store_true", help="time stilts only")
    p.add_argument(
        "--st-checkpoint",
        default=None,
        help="transformers checkpoint for sentence-transformers (default: the model's source)",
    )
    p.add_argument(
        "--tatoeba",
        default=str(Path(DEFAULT_DEV_PACK) / "tatoeba"),
        help="Tatoeba-layout dir the encode/gRPC sentences come from (round-robin over languages)",
    )
    g = p.add_argument_group("encode")
    g.add_argument("--encode-n", type=int, default=None, help="sentences (1000; quick 256)")
    g.add_argument(
        "--batch-sizes", default=None, help="comma-separated batch sizes (1,8,32,128; quick 1,32)"
    )
    g = p.add_argument_group("process (whole `stilts encode` processes vs USE-multilingual v3)")
    g.add_argument(
        "--process-n",
        type=int,
        default=None,
        help="held-out sentences per `stilts encode` process (4000; quick 500); one-sentence "
        "processes time the start-up",
    )
    env_flag(
        g,
        "--process-threads",
        env="STILTS_THREADS",
        default=2,
        type=int,
        help="--threads of every process (USE: its threads)",
    )
    g.add_argument(
        "--no-serve",
        action="store_true",
        help="skip the peak RSS of `stilts serve` (embedding the same sentences through gRPC)",
    )
    g = p.add_argument_group("search")
    g.add_argument("--search-sizes", default=None, help="index sizes (10000,100000; quick 10000)")
    g.add_argument(
        "--index-kinds",
        default="flat,ivf,hnsw",
        help="kinds to time: flat, ivf, hnsw, ivfpq (ivfpq trains OPQ: minutes)",
    )
    g.add_argument("--queries", type=int, default=None, help="timed queries (500; quick 200)")
    g.add_argument(
        "--search-vectors",
        default=None,
        help="a .npy of real embeddings (e.g. from `stilts encode`) instead of synthetic vectors; "
        "random rows become the held-out queries",
    )
    g.add_argument(
        "--faiss-threads", type=int, default=None, help="FAISS OpenMP threads (default: FAISS's)"
    )
    g = p.add_argument_group("mining")
    g.add_argument(
        "--bucc",
        default=str(Path(DEFAULT_DEV_PACK) / "bucc"),
        help="BUCC 2017 directory the mining pair comes from",
    )
    g.add_argument("--mining-pair", default="de", help="language pair (xx of xx-en)")
    g.add_argument(
        "--mining-max",
        type=int,
        default=None,
        help="subsample to N xx sentences (default: all; quick 600)",
    )
    g = p.add_argument_group("scale (not in the default sections)")
    g.add_argument(
        "--million",
        action="store_true",
        help="run the scale section at 1,000,000 vectors: per kind build time, peak RSS, disk "
        "size, latency, QPS, recall@10 (in memory and with memory-mapped IVF lists), and "
        "1M x 1M mining from .npy files (hours on 2 cores)",
    )
    g.add_argument(
        "--scale-n", type=int, default=100_000, help="vectors for --sections scale (not --million)"
    )
    g.add_argument(
        "--scale-dir",
        default="stilts-scale",
        help="work directory for the scale section (vectors, indices; ~10 GB at 1M)",
    )
    g.add_argument(
        "--scale-kinds", default="flat,ivf,ivfpq", help="index kinds to scale ('' for none)"
    )
    g.add_argument(
        "--mine-kinds", default="ivf,ivfpq", help="stilts mine --index kinds ('' for none)"
    )
    g.add_argument("--mine-n", type=int, default=None, help="sentences per side (default: n)")
    g.add_argument("--mine-nprobe", type=int, default=32, help="stilts mine --nprobe")
    g = p.add_argument_group("gRPC")
    g.add_argument("--concurrency", default="1,8,64", help="concurrent clients per run")
    g.add_argument("--workloads", default="embed,search", help="embed and/or search")
    g.add_argument("--max-requests", type=int, default=None, help="request limit per run")
    g.add_argument("--max-seconds", type=float, default=None, help="time limit per run")
    g.add_argument("--request-timeout", type=float, default=10.0, help="deadline per request, s")
    g = p.add_argument_group("HTTP (Embed over HTTP against gRPC, one server, one run)")
    g.add_argument("--http-batches", default="1,32", help="comma-separated texts per Embed request")
    g.add_argument(
        "--http-concurrency", default="1,8", help="comma-separated concurrent clients per run"
    )
    g.add_argument(
        "--http-seconds",
        type=float,
        default=None,
        help="seconds per run and transport (3; quick 1.5)",
    )
    g.add_argument(
        "--http-encoding",
        default="base64",
        choices=("base64", "float"),
        help="encoding_format of the HTTP requests (base64: what the openai client asks for)",
    )
    g = p.add_argument_group("soak")
    g.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="MINUTES",
        help="instead of the sections: mixed writes, deletes, searches and gets against one "
        "server for MINUTES; errors by code, p50/p99 and server RSS per window",
    )
    g.add_argument("--soak-clients", type=int, default=64, help="concurrent soak clients")
    g.add_argument(
        "--soak-window", type=float, default=60.0, help="seconds per soak reporting window"
    )
    _add_output_flags(p)
    p.set_defaults(func=commands.cmd_speed)


# --- routes -----------------------------------------------------------------------------------


def _register_routes(bsub: argparse._SubParsersAction) -> None:
    from stilts.benchmarks.precision_routes import ROUTES

    p = bsub.add_parser(
        "routes",
        help="ways to build the CPU graph (fusions, q4, int8 variants) measured side by side",
        description="Builds each route's graph from the model's fp32 graph once (into "
        "--work-dir) and measures, in one process: file size, load time, parity with fp32 and "
        "batch invariance (32 sentences alone vs in one batch), sentences/s at each batch size "
        "(interleaved rounds, median; ratios vs the shipped int8), Tatoeba cosine/margin top-1 "
        "on every language (deltas vs fp32, the worst language) and BUCC F1. Routes: "
        + "; ".join(f"{n}: {r.description}" for n, r in ROUTES.items()),
    )
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="stilts model name or dir")
    p.add_argument(
        "--routes",
        default=",".join(ROUTES),
        help="comma-separated routes (default: all; fp32 is always measured, as the reference)",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="where built graphs are kept between runs (default: $STILTS_HOME/routes/<model>)",
    )
    p.add_argument(
        "--tatoeba",
        default=str(Path(DEFAULT_DEV_PACK) / "tatoeba"),
        help="Tatoeba directory (either layout); '' to skip",
    )
    p.add_argument(
        "--bucc", default=str(Path(DEFAULT_DEV_PACK) / "bucc"), help="BUCC directory; '' to skip"
    )
    p.add_argument("--languages", default=None, help="Tatoeba languages (default: all)")
    p.add_argument("--bucc-languages", default=None, help="BUCC pairs (default: all)")
    p.add_argument("--max-pairs", type=int, default=100, help="first N Tatoeba pairs per language")
    p.add_argument(
        "--bucc-max",
        type=int,
        default=500,
        help="subsample each BUCC set to N xx sentences, keeping the gold/distractor shares",
    )
    p.add_argument(
        "--speed-n",
        type=int,
        default=256,
        help="dev sentences for speed, parity and calibration (round-robin over languages)",
    )
    p.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes to time")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (median) and loads")
    p.add_argument("--output", required=True, help="results JSON to write")
    p.add_argument("--report", default=None, help="Markdown table to write (also printed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, no printed table")
    p.set_defaults(func=commands.cmd_routes)


def _register_fillers(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "fillers",
        help="monolingual sentences of translated HTML documentation, by page (pages.tsv)",
        description="Read HTML pages laid out as .../<language>/<page>.html (directories, or "
        ".deb packages such as gimp-help-de, unpacked with dpkg-deb -x) into pages.tsv "
        "(language TAB page TAB sentence): the realistic pools of `stilts bench threshold "
        "--fillers` take xx sentences from one half of the pages and English ones from the "
        "other. Paragraphs are split into sentences; sentences that a translated page kept in "
        "English are dropped. manpages-* packages are refused (reserved for independent "
        "evaluation).",
    )
    p.add_argument("inputs", nargs="+", help="directories or .deb packages")
    p.add_argument("--out", required=True, help="pages.tsv to write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.cmd_fillers)


def _register_threshold(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "threshold",
        help="how well `stilts mine --threshold auto` chooses: regret and precision estimates",
        description="On BUCC-layout sets with gold, at the pack's own share of true pairs and at "
        "the shares of real mining jobs (--shares, default 1, 2 and 5 %% of the xx sentences): "
        "every candidate mined once, then F1 at the threshold each auto estimator chooses (and "
        "its estimated vs true precision and number of true pairs), at fixed thresholds (1.04, "
        "1.06), at calibrated ones (the oracle threshold of the pack's other pairs, and of the "
        "other packs) and at the oracle, with the mining job's time and peak memory. With "
        "--fillers a share is a realistic pool (gold pairs among up to --pool-size sentences "
        "per side of untranslated text of the same domain; see docs/mining.md for how to build "
        "the filler directory), else the pack's set with gold pairs cut. Writes JSON and a "
        "Markdown report.",
    )
    p.add_argument(
        "--bucc",
        action="append",
        default=None,
        help="BUCC 2017 directory; repeat for several packs (default: the bitext-dev and "
        "docs-dev packs beside the project, where present)",
    )
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="model name or directory")
    precision_flag(p)
    p.add_argument("--k", type=int, default=4, help="neighbours for the margin")
    p.add_argument(
        "--shares",
        default="0.01,0.02,0.05",
        help="shares of xx sentences with a translation, comma-separated (the pack's own set "
        "is always measured too)",
    )
    env_flag(
        p,
        "--fillers",
        env="STILTS_FILLERS",
        default=None,
        help="filler directory: <pack>/pairs.tsv and/or <pack>/pages.tsv per pack name "
        "(bitext-dev, docs-dev); packs without one get diluted sets",
    )
    p.add_argument(
        "--pool-size",
        type=int,
        default=50_000,
        help="at most this many sentences per side of a realistic pool",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the realistic pools")
    p.add_argument(
        "--index",
        default="flat",
        help="k-NN index kind: flat (exact), auto, ivf, hnsw, ... (as `stilts mine --index`)",
    )
    p.add_argument(
        "--bucc-max",
        type=int,
        default=None,
        help="at most N xx sentences per pair, the set's shape kept (default: all)",
    )
    p.add_argument(
        "--vector-cache",
        default=None,
        help="directory where encoded texts are kept across runs (per model route)",
    )
    p.add_argument("--output", required=True, help="results JSON to write")
    p.add_argument("--report", default=None, help="Markdown report to write (also printed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no printed report")
    p.set_defaults(func=commands.cmd_threshold)
