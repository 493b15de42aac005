"""Encode throughput by batch size: stilts on every CPU route vs sentence-transformers and USE.

The one encode benchmark: ``stilts bench speed --sections encode`` (:func:`run`, every batch size)
and ``stilts bench encode`` (:func:`encode_report`, one batch size, sentence-transformers as the
baseline) time the same systems the same way.

All systems encode the same sentences in one process, interleaved round by round
(:func:`~stilts.benchmarks.timing.interleaved_medians`), so machine noise hits all of them; each
figure is the median of ``repeats`` and every ratio compares two systems timed in the same rounds.
Tokens are counted with the stilts model's tokenizer (prefix and special tokens included), the same
count for every system, so tokens/s compares like with like.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stilts.benchmarks.timing import interleaved_medians, round_ratio

LOG = logging.getLogger(__name__)

ST = "sentence-transformers"
USE = "use-multilingual-v3"


def _chunked(fn: Callable[[list[str]], object], texts: list[str], batch_size: int) -> None:
    for i in range(0, len(texts), batch_size):
        fn(texts[i : i + batch_size])


def build_systems(
    model: str = "default",
    kind: str = "bitext",
    baselines: tuple[str, ...] = ("st", "use"),
    checkpoint: str | None = None,
) -> tuple[dict[str, Callable[[list[str], int], object]], dict]:
    """The systems to time: ``name -> fn(texts, batch_size)``, and what each one is."""
    from stilts.encoding.encoder import encoders_by_route

    encoders = encoders_by_route(model)
    systems: dict[str, Callable[[list[str], int], object]] = {}
    info: dict[str, dict] = {}
    for p, enc in encoders.items():
        systems[f"stilts-{p}"] = lambda t, b, e=enc: e.encode(t, kind=kind, batch_size=b)
        info[f"stilts-{p}"] = {
            "model": enc.manifest.name,
            "fingerprint": enc.manifest.fingerprint,
            "precision": p,
            "threads": enc.threads,
            "provider": enc.provider,
            "load_seconds": enc.load_seconds,
            "graph_bytes": enc.graph_bytes,
        }
    first = next(iter(encoders.values()))
    m = first.manifest
    if "st" in baselines:
        from stilts.benchmarks.systems import sentence_transformers_model

        ckpt = checkpoint or (m.source or {}).get("checkpoint")
        if ckpt is None:
            from stilts.sources.default_model import checkpoint_dir

            ckpt = str(checkpoint_dir())
        st = sentence_transformers_model(ckpt, m.pooling, m.max_len)
        prefix = m.prefix(kind)
        systems[ST] = lambda t, b: st.encode([prefix + x for x in t], batch_size=b)
        import torch

        info[ST] = {"checkpoint": str(ckpt), "torch_threads": torch.get_num_threads()}
    if "use" in baselines:
        from stilts.benchmarks.systems import USESystem

        use = USESystem()
        systems[USE] = lambda t, b: _chunked(use.model.encode, t, b)
        info[USE] = use.info()
    return systems, {"systems": info, "tokenizer": first}


def run(
    sentences: list[str],
    batch_sizes: list[int],
    repeats: int = 3,
    model: str = "default",
    kind: str = "bitext",
    baselines: tuple[str, ...] = ("st", "use"),
    checkpoint: str | None = None,
) -> dict:
    """Time every system at every batch size.

    Returns:
        ``{"n", "tokens", "repeats", "systems": {name: info}, "by_batch_size": {bs: {name:
        {median_seconds, seconds, sentences_per_second, tokens_per_second, vs: {other: ratio}}}}}``
        where ``vs[other]`` = this system's throughput / the other's (> 1: faster).
    """
    systems, meta = build_systems(model, kind, baselines, checkpoint)
    tokens = sum(len(t) for t in meta["tokenizer"].tokenize(sentences, kind))
    out: dict = {
        "n": len(sentences),
        "tokens": tokens,
        "mean_tokens": tokens / max(len(sentences), 1),
        "repeats": repeats,
        "kind": kind,
        "baselines": [s for s in (ST, USE) if s in systems],
        "systems": meta["systems"],
        "by_batch_size": {},
    }
    warm = sentences[: min(len(sentences), 64)]
    for fn in systems.values():  # first calls pay for allocations and lazy initialisation
        fn(warm, 32)
    for bs in batch_sizes:
        LOG.info(
            "encode: batch size %d, %d sentences, %d systems", bs, len(sentences), len(systems)
        )
        timed = interleaved_medians(
            {name: (lambda fn=fn, bs=bs: fn(sentences, bs)) for name, fn in systems.items()},
            repeats,
        )
        row = {}
        for name, t in timed.items():
            sec = t["median_seconds"]
            row[name] = {
                **t,
                "sentences_per_second": len(sentences) / sec,
                "tokens_per_second": tokens / sec,
            }
        for name, r in row.items():
            r["vs"] = {other: round_ratio(row[other], r) for other in row if other != name}
        out["by_batch_size"][str(bs)] = row
    return out


def encode_report(
    sentences: list[str],
    model: str = "default",
    checkpoint: str | None = None,
    repeats: int = 3,
    batch_size: int = 32,
    with_baseline: bool = True,
) -> dict:
    """``stilts bench encode``: :func:`run` at one batch size, against sentence-transformers.

    Returns:
        ``{"n", "repeats", "batch_size", "baseline", "model", "threads", "provider", "machine",
        "systems": {name: {median_seconds, seconds, sentences_per_second, speedup_vs_baseline,
        ...what the system is}}}``; ``speedup_vs_baseline`` is the median per-round ratio.
    """
    import platform

    from stilts.encoding.autoroute import cpu_flags

    baselines = ("st",) if with_baseline else ()
    res = run(sentences, [batch_size], repeats, model, "bitext", baselines, checkpoint)
    row = res["by_batch_size"][str(batch_size)]
    systems = {}
    for name, r in row.items():
        speedup = 1.0 if name == ST else r["vs"].get(ST)
        systems[name] = {
            **res["systems"][name],
            "median_seconds": r["median_seconds"],
            "seconds": r["seconds"],
            "sentences_per_second": r["sentences_per_second"],
            "speedup_vs_baseline": speedup if with_baseline else None,
        }
    first = res["systems"][next(n for n in row if n != ST)]
    return {
        "n": res["n"],
        "repeats": repeats,
        "batch_size": batch_size,
        "baseline": ST if with_baseline else None,
        "model": first["model"],
        "threads": first["threads"],
        "provider": first["provider"],
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpu_flags": cpu_flags(),
        },
        "systems": systems,
    }


def format_table(report: dict) -> str:
    """:func:`encode_report` as a text table."""
    lines = [
        f"encode throughput: {report['n']} sentences, median of {report['repeats']}, "
        f"batch {report['batch_size']}, {report['threads']} threads",
        "CPU flags: " + (" ".join(report["machine"].get("cpu_flags") or []) or "-"),
        f"{'system':<24}{'sent/s':>10}{'vs baseline':>14}",
    ]
    for name, r in report["systems"].items():
        ratio = r["speedup_vs_baseline"]
        lines.append(
            f"{name:<24}{r['sentences_per_second']:>10.1f}{(f'{ratio:.2f}x' if ratio else '-'):>14}"
        )
    return "\n".join(lines)
