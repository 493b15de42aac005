"""The parity gate: how close to fp32 a route or a quantised graph must come, and on what.

A route serves ``auto`` only after passing :func:`gate` against the fp32 graph
(:mod:`stilts.encoding.autoroute`); the export builds its q4 graph again with fp32 activations
when the mean cosine misses :data:`GATE_MEAN_COSINE` (:mod:`stilts.graphs.export`). Both run on
:data:`PARITY_SAMPLE` unless given dev sentences.
"""

from __future__ import annotations

GATE_MEAN_COSINE = 0.9999
GATE_MIN_COSINE = 0.99
GATE_BATCH_DIFF = 1e-5

# A fixed multilingual sample for the parity checks: several scripts, lengths and an empty string.
PARITY_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "敏捷的棕色狐狸跳过了懒狗。",
    "素早い茶色の狐がのろまな犬を飛び越える。",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "Nopea ruskea kettu hyppää laiskan koiran yli.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "Could not open file: permission denied",
    "",
]


def gate(parity: dict) -> str | None:
    """None when ``parity`` passes the gate, else why not."""
    if parity["cosine_vs_fp32_mean"] < GATE_MEAN_COSINE:
        return f"mean cosine {parity['cosine_vs_fp32_mean']:.6f} < {GATE_MEAN_COSINE}"
    if parity["cosine_vs_fp32_min"] < GATE_MIN_COSINE:
        return f"a sentence's cosine {parity['cosine_vs_fp32_min']:.6f} < {GATE_MIN_COSINE}"
    if parity["batch_vs_alone_max_abs"] >= GATE_BATCH_DIFF:
        return f"batch invariance {parity['batch_vs_alone_max_abs']:.1e} >= {GATE_BATCH_DIFF}"
    return None
