"""``stilts bench encode``: encoder throughput, stilts at every precision vs sentence-transformers.

All systems encode the same sentences in the same process; each is timed ``repeats`` times,
interleaved, and reported as the median with ratios to the baseline (sentence-transformers running
the same converted checkpoint in PyTorch).
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path

from stilts.benchmarks.timing import interleaved_medians

LOG = logging.getLogger(__name__)

BASELINE = "sentence-transformers"


def sentence_transformers_model(checkpoint: str | Path, pooling: str = "mean", max_len: int = 512):
    """The same checkpoint as a sentence-transformers model (mean pooling, normalised)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    transformer = models.Transformer(str(checkpoint), max_seq_length=max_len)
    get_dim = getattr(transformer, "get_embedding_dimension", None)
    dim = get_dim() if get_dim else transformer.get_word_embedding_dimension()
    return SentenceTransformer(
        modules=[transformer, models.Pooling(dim, pooling), models.Normalize()], device="cpu"
    )


def run(
    sentences: list[str],
    model: str = "default",
    checkpoint: str | Path | None = None,
    repeats: int = 3,
    batch_size: int = 32,
    with_baseline: bool = True,
) -> dict:
    """Time stilts at every precision the model holds (and the sentence-transformers baseline) on ``sentences``.

    Returns:
        a dict with per-system median seconds, sentences/s and ratio to the baseline.
    """
    from stilts.encoder import encoders_by_precision

    encoders = encoders_by_precision(model)
    kind = "bitext"
    systems = {
        f"stilts-{p}": (lambda e=e: e.encode(sentences, kind=kind, batch_size=batch_size))
        for p, e in encoders.items()
    }
    if with_baseline:
        if checkpoint is None:
            from stilts.default_model import checkpoint_dir

            checkpoint = checkpoint_dir()
        m = next(iter(encoders.values())).manifest
        st = sentence_transformers_model(checkpoint, m.pooling, m.max_len)
        prefix = m.prefix(kind)
        prefixed = [prefix + s for s in sentences]
        systems[BASELINE] = lambda: st.encode(prefixed, batch_size=batch_size)
    for fn in systems.values():  # warm-up: first calls pay for allocations and lazy init
        fn()
    timed = interleaved_medians(systems, repeats)
    base = timed.get(BASELINE, {}).get("median_seconds")
    results = {}
    for name, t in timed.items():
        results[name] = {
            **t,
            "sentences_per_second": len(sentences) / t["median_seconds"],
            "speedup_vs_baseline": (base / t["median_seconds"]) if base else None,
        }
    enc = next(iter(encoders.values()))
    for p, e in encoders.items():
        results[f"stilts-{p}"].update(load_seconds=e.load_seconds, graph_bytes=e.graph_bytes)
    return {
        "n": len(sentences),
        "repeats": repeats,
        "batch_size": batch_size,
        "baseline": BASELINE if with_baseline else None,
        "model": enc.manifest.name,
        "threads": enc.threads,
        "provider": enc.provider,
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "systems": results,
    }


def format_table(report: dict) -> str:
    lines = [
        f"encode throughput: {report['n']} sentences, median of {report['repeats']}, "
        f"batch {report['batch_size']}, {report['threads']} threads",
        f"{'system':<24}{'sent/s':>10}{'vs baseline':>14}",
    ]
    for name, r in report["systems"].items():
        ratio = r["speedup_vs_baseline"]
        lines.append(
            f"{name:<24}{r['sentences_per_second']:>10.1f}{(f'{ratio:.2f}x' if ratio else '-'):>14}"
        )
    return "\n".join(lines)
