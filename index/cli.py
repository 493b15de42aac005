"""``stilts mine``: the offline bitext-mining job (heavy imports stay inside the handler)."""

from __future__ import annotations

import argparse
import json
import math

from stilts.cliutil import env_flag, precision_flag


def _threshold(value: str) -> float | str | None:
    if value == "auto":
        return value
    if value == "none":
        return None
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number, 'auto' or 'none': {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"not a finite number: {value!r}")
    return number


def _target_precision(value: str) -> float:
    try:
        p = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < p <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return p


def _threshold_options(args: argparse.Namespace) -> dict:
    """``threshold`` and ``target_precision`` (which implies ``auto``) for the mining calls."""
    if args.target_precision is not None and args.threshold != "auto":
        from stilts.errors import ErrorCode, StiltsError

        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "--target-precision chooses the threshold: use it with --threshold auto",
            "target_precision",
        )
    threshold = "auto" if args.target_precision is not None else args.threshold
    return {"threshold": threshold, "target_precision": args.target_precision}


def _mine_on_server(args: argparse.Namespace) -> dict:
    from stilts.client import Client
    from stilts.index.minefiles import mine_on_server

    with Client(args.server, timeout=None) as client:
        return mine_on_server(
            args.src,
            args.tgt,
            args.output,
            client,
            model=args.model,
            k=args.k,
            margin=args.margin,
            retrieval=args.retrieval,
            input_format=args.input_format,
            **_threshold_options(args),
        )


def _vector_inputs(args: argparse.Namespace) -> bool:
    """``--input-format npy``, or ``auto`` with both inputs being .npy files."""
    from stilts.errors import ErrorCode, StiltsError
    from stilts.index.minevectors import is_npy

    if args.input_format == "npy":
        return True
    if args.input_format != "auto":
        return False
    npy = [is_npy(args.src), is_npy(args.tgt)]
    if any(npy) and not all(npy):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "SRC and TGT must both be .npy vector files or both text files",
            "input",
        )
    return all(npy)


def _cmd_mine(args: argparse.Namespace) -> int:
    if args.server:
        summary = _mine_on_server(args)
    else:
        common = dict(
            k=args.k,
            margin=args.margin,
            retrieval=args.retrieval,
            index=args.index,
            engine=args.engine,
            ray_address=args.ray_address,
            progress=not args.quiet,
            **_threshold_options(args),
        )
        if _vector_inputs(args):
            from stilts.index.minevectors import mine_vector_files

            summary = mine_vector_files(
                args.src, args.tgt, args.output, nprobe=args.nprobe, **common
            )
        else:
            from stilts.errors import ErrorCode, StiltsError
            from stilts.index.minefiles import mine_files

            if args.nprobe is not None:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT, "--nprobe applies to .npy vector inputs", "nprobe"
                )
            summary = mine_files(
                args.src,
                args.tgt,
                args.output,
                model=args.model,
                precision=args.precision,
                input_format=args.input_format,
                cache_dir=args.cache_dir,
                chunk_size=args.chunk_size,
                batch_size=args.batch_size,
                threads=args.threads,
                **common,
            )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``stilts mine``."""
    p = sub.add_parser(
        "mine",
        help="mine translation pairs between two text files (margin-based, files larger than RAM)",
        description="Mine parallel sentences between SRC and TGT: encode both with the model's "
        "bitext prefix (deduplicated, cached in memory-mapped .npy files next to the output, "
        "resumable), k-NN both ways in blocks, ratio margin (Artetxe & Schwenk 2019). Writes "
        "score<TAB>src<TAB>tgt sorted by score (ids when the inputs are id<TAB>sentence, as "
        "BUCC) and OUTPUT.json with a summary.",
    )
    p.add_argument("src", metavar="SRC", help="source file: one sentence per line or id<TAB>text")
    p.add_argument("tgt", metavar="TGT", help="target file, same layouts")
    p.add_argument("--output", "-o", required=True, help="TSV to write (pairs.tsv)")
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="model name or directory")
    p.add_argument("--k", type=int, default=4, help="neighbours for the margin")
    p.add_argument(
        "--margin",
        choices=["ratio", "distance", "absolute"],
        default="ratio",
        help="ratio: cos / mean k-NN cos of both sides; distance: the difference; "
        "absolute: plain cosine",
    )
    p.add_argument(
        "--retrieval",
        choices=["max", "forward", "backward", "intersect"],
        default="max",
        help="max: best of both directions, each sentence once (LASER); forward: best target "
        "per source; backward: best source per target; intersect: mutual best",
    )
    p.add_argument(
        "--threshold",
        type=_threshold,
        default="auto",
        help="keep pairs scoring at least this number; 'auto' (default): chosen from this job's "
        "own scores at the best expected F1 (decoys: the same mining with every sentence's "
        "nearest neighbour left out; a two-component mixture; the estimate, with a score "
        "histogram, goes to OUTPUT.json under threshold_auto, and one log line); 'none': every "
        "candidate pair. Fewer than 100 candidates: no estimate, every pair is kept",
    )
    p.add_argument(
        "--target-precision",
        type=_target_precision,
        default=None,
        metavar="P",
        help="with auto: the lowest threshold whose estimated precision is at least P, in "
        "(0, 1] (if none reaches it: the most precise one, with a warning)",
    )
    p.add_argument(
        "--index",
        default="auto",
        help="k-NN index: auto (exact below 100k sentences), flat (exact), ivf, hnsw, ivfpq or a "
        "FAISS factory string",
    )
    p.add_argument(
        "--nprobe",
        type=int,
        default=None,
        help="IVF lists visited per query with --index ivf/ivfpq (default nlist/8 within "
        "32..256; lower is faster, recall drops); .npy inputs only",
    )
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="run here, or on Ray (encoding, and k-NN as one task per database shard: "
        "exact tiles, or the shard's IVF lists for ivf/ivfpq)",
    )
    env_flag(
        p,
        "--ray-address",
        env="STILTS_RAY_ADDRESS",
        default=None,
        help="Ray cluster address (default: start local Ray)",
    )
    p.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=None,
        help="mine on a running stilts server instead of locally (files are sent to it)",
    )
    p.add_argument(
        "--input-format",
        choices=["auto", "lines", "ids", "npy"],
        default="auto",
        help="lines: one sentence per line; ids: id<TAB>sentence (BUCC); npy: precomputed "
        "(n, dim) float32 L2-normalised vectors, the encoder is skipped and pairs are written as "
        "score<TAB>src_row<TAB>tgt_row; auto: detected",
    )
    p.add_argument(
        "--cache-dir", default=None, help="where embedding caches live (default OUTPUT.cache/)"
    )
    precision_flag(p)
    p.add_argument(
        "--chunk-size", type=int, default=8192, help="sentences per encoded and cached chunk"
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per encoder batch")
    env_flag(
        p, "--threads", env="STILTS_THREADS", default=None, type=int, help="ONNX intra-op threads"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_mine)
