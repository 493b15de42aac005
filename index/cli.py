"""``stilts mine``: the offline bitext-mining job (heavy imports stay inside the handler)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from stilts.cliutil import env_flag
from stilts.encoder import PRECISION_CHOICES

LOG = logging.getLogger(__name__)


def _threshold(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def _read_side(path: str, input_format: str) -> tuple[list[str] | None, list[str]]:
    from stilts.index.minefiles import detect_ids

    from stilts.errors import ErrorCode, StiltsError

    if not Path(path).is_file():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{path}: no such file", "input")
    has_ids = detect_ids(path) if input_format == "auto" else input_format == "ids"
    ids, texts = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if has_ids:
                sid, tab, text = line.partition("\t")
                if not tab:
                    raise StiltsError(
                        ErrorCode.INVALID_ARGUMENT,
                        f"{path}:{n}: expected id<TAB>sentence; pass --input-format lines",
                        "input",
                    )
                ids.append(sid)
                texts.append(text)
            else:
                texts.append(line)
    return (ids if has_ids else None), texts


def _unique(texts: list[str], all_lines: bool) -> tuple[list[str], list[list[int]]]:
    """Unique non-empty (stripped) sentences and, per unique sentence, its lines."""
    first: dict[str, int] = {}
    lines: list[list[int]] = []
    for n, t in enumerate(texts):
        t = t.strip()
        if not t:
            continue
        if t not in first:
            first[t] = len(lines)
            lines.append([n])
        elif all_lines:
            lines[first[t]].append(n)
    return list(first), lines


def _mine_on_server(args: argparse.Namespace) -> dict:
    from stilts.index.minefiles import write_text_pairs

    from stilts.errors import ErrorCode, StiltsError

    try:
        from stilts.client import Client
    except ImportError as e:
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"--server needs the stilts gRPC client (stilts.client), which is not available: {e}",
            "server",
        ) from None
    from stilts.index.mining import check_options

    check_options(args.k, args.margin, args.retrieval, args.threshold)
    t0 = time.perf_counter()
    s_ids, s_texts = _read_side(args.src, args.input_format)
    t_ids, t_texts = _read_side(args.tgt, args.input_format)
    # As the local engine: unique non-empty sentences go out; duplicates come back as every
    # line holding them (ids layout) or once (sentences).
    s_uniq, s_lines = _unique(s_texts, s_ids is not None)
    t_uniq, t_lines = _unique(t_texts, t_ids is not None)
    for name, uniq in (("src", s_uniq), ("tgt", t_uniq)):
        if not uniq:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"{name}: no sentences", name)
    client = Client(args.server)
    try:
        results = client.mine(
            s_uniq,
            t_uniq,
            k=args.k,
            margin=args.margin,
            retrieval=args.retrieval,
            threshold=args.threshold,
            model=args.model,
        )
        rows = [
            (float(r.score), a, b)
            for r in results
            for a in s_lines[int(r.src_index)]
            for b in t_lines[int(r.tgt_index)]
        ]
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
    out = Path(args.output)
    n = write_text_pairs(rows, s_ids or s_texts, t_ids or t_texts, out)
    summary = {
        "output": str(out),
        "pairs": len(results),
        "lines": n,
        "server": args.server,
        "model": args.model,
        "src": {"path": args.src, "lines": len(s_texts), "ids": s_ids is not None},
        "tgt": {"path": args.tgt, "lines": len(t_texts), "ids": t_ids is not None},
        "k": args.k,
        "margin": args.margin,
        "retrieval": args.retrieval,
        "threshold": args.threshold,
        "engine": "server",
        "seconds": {"total": round(time.perf_counter() - t0, 3)},
    }
    out.with_name(out.name + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _cmd_mine(args: argparse.Namespace) -> int:
    if args.server:
        summary = _mine_on_server(args)
    else:
        from stilts.index.minefiles import mine_files

        summary = mine_files(
            args.src,
            args.tgt,
            args.output,
            model=args.model,
            precision=args.precision,
            k=args.k,
            margin=args.margin,
            retrieval=args.retrieval,
            threshold=args.threshold,
            index=args.index,
            engine=args.engine,
            ray_address=args.ray_address,
            input_format=args.input_format,
            cache_dir=args.cache_dir,
            chunk_size=args.chunk_size,
            batch_size=args.batch_size,
            threads=args.threads,
            progress=not args.quiet,
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
        default=None,
        help="keep pairs scoring at least this (default: all; ratio margins of true pairs are "
        "typically above ~1.0-1.06: calibrate on a pair with gold)",
    )
    p.add_argument(
        "--index",
        default="auto",
        help="k-NN index: auto (exact below 100k sentences), flat (exact), ivf, hnsw, ivfpq or a "
        "FAISS factory string",
    )
    p.add_argument(
        "--engine", choices=["local", "ray"], default="local", help="run here, or on Ray"
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
        choices=["auto", "lines", "ids"],
        default="auto",
        help="lines: one sentence per line; ids: id<TAB>sentence (BUCC); auto: detected",
    )
    p.add_argument(
        "--cache-dir", default=None, help="where embedding caches live (default OUTPUT.cache/)"
    )
    env_flag(
        p,
        "--precision",
        env="STILTS_PRECISION",
        default="auto",
        choices=list(PRECISION_CHOICES),
        help="which ONNX graph to run (auto: the model's default, q4 on CPU for new models)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=8192, help="sentences per encoded and cached chunk"
    )
    p.add_argument("--batch-size", type=int, default=32, help="sentences per encoder batch")
    env_flag(
        p, "--threads", env="STILTS_THREADS", default=None, type=int, help="ONNX intra-op threads"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_mine)
