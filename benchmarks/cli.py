"""``stilts bench``: accuracy and speed harnesses."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from stilts.cliutil import env_flag

DEFAULT_DEV_PACK = os.environ.get("STILTS_DEV_PACK", "../shared/data/bitext-dev")


def _cmd_encode(args: argparse.Namespace) -> int:
    from stilts.benchmarks import encode_speed

    if args.input:
        with open(args.input, encoding="utf-8") as f:
            sentences = [line.rstrip("\n") for line in f][: args.n]
    else:
        sentences = encode_speed.dev_sentences(Path(args.tatoeba), args.n)
    report = encode_speed.run(
        sentences,
        model=args.model,
        checkpoint=args.checkpoint,
        repeats=args.repeats,
        batch_size=args.batch_size,
        with_baseline=not args.no_baseline,
    )
    print(encode_speed.format_table(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="accuracy and speed benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")

    p = bsub.add_parser(
        "encode",
        help="encoder throughput: stilts int8/fp32 vs sentence-transformers",
        description="Throughput of stilts int8, stilts fp32 and sentence-transformers (the same "
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
    p.add_argument("--input", default=None, help="instead: a file with one sentence per line")
    p.add_argument("--no-baseline", action="store_true", help="skip sentence-transformers")
    p.add_argument("--output", default=None, help="write the JSON report here")
    p.set_defaults(func=_cmd_encode)
