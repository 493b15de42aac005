"""``stilts bench large-import``: a model over the protobuf limit, from a sentence-transformers
directory to a served route, with the time and peak memory of each step.

It builds a random-weight XLM-R of multilingual-e5-large's shapes (24 layers, 1024 wide, 16 heads,
4096 FFN, 250,002-token vocabulary: 560M parameters, 2.24 GB in fp32; mean pooling, Normalize)
as a sentence-transformers directory in ``--work-dir``, then runs, each step in a process of its
own so that its peak RSS (``wait4``'s ``ru_maxrss``) is that step's alone:

1. ``build``: the checkpoint and the directory (not a stilts step: for reference);
2. ``import``: :func:`stilts.sources.st_import.import_directory` (export, int8, q4, their gates
   and the parity with ``SentenceTransformer.encode``, 1e-5);
3. ``route``: the per-CPU route choice (:func:`stilts.encoding.autoroute.choose`, forced);
4. ``serve``: what ``stilts serve`` does at start: ``Encoder(name)`` on the recorded ``auto``
   route (checksums verified), then one batch of sentences.

Everything is written under ``--work-dir`` (``STILTS_HOME`` is set to a folder in it); the figures
are printed as one JSON object (and written to ``--output``). Nothing here is a test: it needs
about 9 GB of disk and 6 GB of memory, and several CPU minutes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from stilts.benchmarks.toy_xlmr import fast_tokenizer, save_random_xlmr, unigram_tokenizer

LOG = logging.getLogger(__name__)

# multilingual-e5-large (XLM-R Large)
SHAPES = {"layers": 24, "hidden": 1024, "heads": 16, "ffn": 4096, "vocab": 250002}
MODEL_NAME = "large-bench"
STEPS = ("build", "import", "route", "serve")
SENTENCES = [
    "The file could not be opened.",
    "Save your changes before closing the window.",
    "Die Datei konnte nicht geöffnet werden.",
    "Le fichier n'a pas pu être ouvert.",
    "El archivo no se pudo abrir.",
    "ファイルを開けませんでした。",
    "Не удалось открыть файл.",
    "query: how do I open a file",
]


def _paths(work: Path) -> dict[str, Path]:
    return {"src": work / "st-model", "home": work / "home", "steps": work / "steps"}


def build(work: Path, shapes: dict[str, int], max_seq_length: int) -> dict:
    """A random XLM-R of ``shapes`` saved as a sentence-transformers directory (Transformer at
    the root, mean Pooling, Normalize), with a small Unigram tokenizer (its ids lie in the
    vocabulary; the embedding table still has ``vocab`` rows)."""
    src = _paths(work)["src"]
    src.mkdir(parents=True, exist_ok=True)
    tok = unigram_tokenizer(SENTENCES * 8, 400)
    fast = fast_tokenizer(tok, max_seq_length)
    params = save_random_xlmr(
        src,
        vocab=shapes["vocab"],
        hidden=shapes["hidden"],
        layers=shapes["layers"],
        heads=shapes["heads"],
        ffn=shapes["ffn"],
        positions=max_seq_length + 2,
    )
    fast.save_pretrained(src)
    files = {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.models.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            },
        ],
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": "query: ", "document": "passage: "},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {
            "word_embedding_dimension": shapes["hidden"],
            "pooling_mode_mean_tokens": True,
        },
    }
    for name, content in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(json.dumps(content, indent=2))
    (src / "2_Normalize").mkdir(exist_ok=True)
    return {"parameters": params, "fp32_weight_bytes": 4 * params, "dir": str(src)}


def step_import(work: Path) -> dict:
    from stilts.manifest import Manifest
    from stilts.sources.st_import import import_directory

    p = _paths(work)
    target = p["home"] / "models" / MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    m: Manifest = import_directory(p["src"], target, name=MODEL_NAME)
    sizes = {f: (target / f).stat().st_size for f in sorted(m.files)}
    return {
        "files": sizes,
        "fingerprint": m.fingerprint,
        "cpu_precision": m.cpu_precision,
        "parity": m.parity,
    }


def step_route(work: Path) -> dict:
    from stilts.encoding import autoroute

    r = autoroute.choose(MODEL_NAME, force=True)
    return {
        "chosen": r["chosen"],
        "choice_seconds": r["seconds"],
        "timing_seconds": r["timing_seconds"],
        "budget_seconds": r["budget_seconds"],
        "native_bf16": r["native_bf16"],
        "routes": {
            n: {
                k: e.get(k)
                for k in (
                    "qualifies",
                    "refused",
                    "load_seconds",
                    "cosine_vs_fp32_mean",
                    "cosine_vs_fp32_min",
                    "sentences_per_second",
                )
                if k in e
            }
            for n, e in r["routes"].items()
        },
    }


def step_serve(work: Path) -> dict:
    from stilts import Encoder

    t = time.perf_counter()
    enc = Encoder(MODEL_NAME, workload="serve")  # as stilts serve loads a model
    load = time.perf_counter() - t
    t = time.perf_counter()
    vectors = enc.encode(SENTENCES, kind="query")
    return {
        "route": enc.precision,
        "load_seconds": round(load, 2),
        "first_encode_seconds": round(time.perf_counter() - t, 2),
        "sentences": len(vectors),
        "dim": int(vectors.shape[1]),
    }


def _child(step: str, work: Path, options: dict) -> None:
    """Run one step in this process and write its figures to ``steps/<step>.json``."""
    out = _paths(work)["steps"] / f"{step}.json"
    if step == "build":
        result = build(work, options["shapes"], options["max_seq_length"])
    else:
        result = {"import": step_import, "route": step_route, "serve": step_serve}[step](work)
    out.write_text(json.dumps(result, indent=2, default=str))


def run_step(step: str, work: Path, options: dict, threads: int | None) -> dict:
    """One step in a child process: its wall time, peak RSS and figures."""
    p = _paths(work)
    p["steps"].mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STILTS_HOME": str(p["home"]), "HF_HUB_OFFLINE": "1"}
    if threads:
        env["STILTS_THREADS"] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "stilts.benchmarks.large_import",
        step,
        str(work),
        json.dumps(options),
    ]
    LOG.info("large-import: %s", step)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"large-import step {step} failed (exit {proc.returncode})")
    figures = json.loads((p["steps"] / f"{step}.json").read_text())
    return {
        **figures,
        "seconds": round(seconds, 1),
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux: KiB
    }


def run(
    work: Path,
    shapes: dict[str, int] | None = None,
    max_seq_length: int = 512,
    threads: int | None = None,
    steps: tuple[str, ...] = STEPS,
) -> dict:
    """Build, import, choose the route and serve-load a model of ``shapes`` under ``work``.

    Returns:
        per step its seconds, peak RSS (bytes and as a multiple of the fp32 weights) and figures.
    """
    work = Path(work).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    options = {"shapes": {**SHAPES, **(shapes or {})}, "max_seq_length": max_seq_length}
    results: dict = {"shapes": options["shapes"], "max_seq_length": max_seq_length, "steps": {}}
    for step in steps:
        results["steps"][step] = run_step(step, work, options, threads)
    built = results["steps"].get("build") or json.loads(
        (_paths(work)["steps"] / "build.json").read_text()
    )
    weights = int(built["fp32_weight_bytes"])
    results["fp32_weight_bytes"] = weights
    results["parameters"] = int(built["parameters"])
    for r in results["steps"].values():
        r["peak_rss_vs_fp32_weights"] = round(r["peak_rss_bytes"] / weights, 2)
    return results


def markdown(results: dict) -> str:
    """The table of the docs: step, seconds, peak RSS, peak RSS / fp32 weights."""
    gb = results["fp32_weight_bytes"] / 1e9
    lines = [
        f"{results['parameters'] / 1e6:.0f}M parameters, {gb:.2f} GB of fp32 weights",
        "",
        "| step | seconds | peak RSS (GB) | peak RSS / fp32 weights |",
        "|---|---:|---:|---:|",
    ]
    for step, r in results["steps"].items():
        lines.append(
            f"| {step} | {r['seconds']:.0f} | {r['peak_rss_bytes'] / 1e9:.2f} "
            f"| {r['peak_rss_vs_fp32_weights']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _child(sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]))
