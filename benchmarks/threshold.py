"""``stilts bench threshold``: how well ``--threshold auto`` chooses, measured on sets with gold.

For every BUCC-layout pack, language pair and dilution factor f (the gold pairs cut to 1/f, both
sides of the others removed, so the true pairs' share of the pools falls about f-fold while the
non-parallel sentences stay): encode once, mine every candidate with its decoys
(:func:`stilts.benchmarks.scoring.neighbours_with_decoys`), then P/R/F1 against the gold of

- each estimator of :mod:`stilts.index.autothreshold` (``METHODS``): the F1, the regret
  (oracle F1 - F1) and the estimated vs the true precision at the chosen threshold;
- the fixed thresholds of other toolkits (LASER/stopes: 1.04, 1.06);
- calibrated thresholds: the oracle threshold of the pack's other pairs pooled (leave-one-out, the
  same domain) and of the other packs pooled (another domain);
- the oracle (F1-optimal on the set itself, needs gold).

The result is one dict (``results.json``); :func:`markdown` renders the tables.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from stilts.benchmarks import data as bdata
from stilts.benchmarks import metrics, scoring
from stilts.benchmarks.accuracy import Candidates, label
from stilts.index import autothreshold

LOG = logging.getLogger(__name__)

FIXED = (1.04, 1.06)
DILUTIONS = (1, 2, 5)


def dilute(s: bdata.BuccSet, factor: int, seed: int = 0) -> bdata.BuccSet:
    """``s`` with ``1/factor`` of its gold pairs (seeded choice); both sides of the others go."""
    if factor == 1:
        return s
    gold = sorted(s.gold)
    rng = np.random.default_rng(seed)
    keep = {gold[i] for i in rng.choice(len(gold), round(len(gold) / factor), replace=False)}
    drop_src = {a for a, b in gold if (a, b) not in keep}
    drop_en = {b for a, b in gold if (a, b) not in keep}
    src = [(i, t) for i, t in zip(s.src_ids, s.src, strict=True) if i not in drop_src]
    en = [(i, t) for i, t in zip(s.en_ids, s.en, strict=True) if i not in drop_en]
    return bdata.BuccSet(
        s.lang,
        s.split,
        [i for i, _ in src],
        [t for _, t in src],
        [i for i, _ in en],
        [t for _, t in en],
        keep,
        s.files,
    )


class _Scored:
    """One (diluted) set mined: labelled candidates, and the raw candidate and decoy scores."""

    def __init__(self, s: bdata.BuccSet, src: np.ndarray, en: np.ndarray, k: int, margin: str):
        real, decoy = scoring.neighbours_with_decoys(src, en, k)
        rows_s, rows_t, self.scores = scoring.candidates(real, margin, "max")
        self.labelled: Candidates = label(s, rows_s, rows_t, self.scores)
        self.decoys = scoring.candidates(decoy, margin, "max")[2]


def run(
    packs: dict[str, dict[str, bdata.BuccSet]],
    encode,
    *,
    dilutions: tuple[int, ...] = DILUTIONS,
    k: int = 4,
    margin: str = "ratio",
    progress: bool = True,
) -> dict:
    """Score every method on every pack x pair x dilution.

    Args:
        packs: ``{pack name: {xx: BuccSet}}`` (one split per pair).
        encode: ``(texts, lang) -> (n, dim)`` L2-normalised vectors.
        dilutions: factors by which the gold pairs are cut.
        k, margin: mining settings (retrieval ``max``).
        progress: a tqdm bar over the pairs.
    """
    scored: dict[str, dict[str, dict[int, _Scored]]] = {}
    seconds = 0.0
    items = [(p, xx) for p, sets in packs.items() for xx in sets]
    bar = items
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(items, desc="bench threshold", unit="pair")
    for pack, xx in bar:
        s = packs[pack][xx]
        t0 = time.perf_counter()
        src_all, en_all = encode(s.src, xx), encode(s.en, "en")
        seconds += time.perf_counter() - t0
        src_row = {i: r for r, i in enumerate(s.src_ids)}
        en_row = {i: r for r, i in enumerate(s.en_ids)}
        for f in dilutions:
            d = dilute(s, f)
            src = src_all[[src_row[i] for i in d.src_ids]]
            en = en_all[[en_row[i] for i in d.en_ids]]
            scored.setdefault(pack, {}).setdefault(xx, {})[f] = _Scored(d, src, en, k, margin)
    results: dict = {
        "settings": {"k": k, "margin": margin, "retrieval": "max", "dilutions": list(dilutions)},
        "encode_seconds": round(seconds, 1),
        "packs": {},
    }
    for pack, pairs in scored.items():
        per: dict = {}
        for xx, by_f in pairs.items():
            for f, sc in by_f.items():
                others = [p[f].labelled for x, p in pairs.items() if x != xx]
                cross = [
                    p[f].labelled
                    for name, other in scored.items()
                    if name != pack
                    for p in other.values()
                ]
                per.setdefault(xx, {})[str(f)] = _evaluate(sc, others, cross)
        results["packs"][pack] = {"pairs": per, "summary": _summarise(per, dilutions)}
    return results


def _evaluate(sc: _Scored, others: list[Candidates], cross: list[Candidates]) -> dict:
    c = sc.labelled
    oracle = c.oracle()
    row: dict = {
        "n_gold": c.n_gold,
        "n_candidates": len(sc.scores),
        "true_share": round(c.n_gold / max(len(sc.scores), 1), 4),
        "oracle": _score(oracle, oracle.f1),
    }
    for method in autothreshold.METHODS:
        est = autothreshold.estimate(sc.scores, sc.decoys, method=method)
        got = c.at(est.threshold if est.threshold is not None else -np.inf)
        row[method] = {
            **_score(got, oracle.f1),
            "estimated_precision": est.precision,
            "precision_error": None
            if est.precision is None
            else abs(est.precision - got.precision),
            "estimated_true_pairs": est.true_pairs,
        }
    for t in FIXED:
        row[f"fixed {t}"] = _score(c.at(t), oracle.f1)
    for name, pool in (("calibrated (same domain)", others), ("calibrated (other domain)", cross)):
        if pool:
            row[name] = _score(c.at(Candidates.pool(pool).oracle().threshold), oracle.f1)
    return row


def _score(s: metrics.ThresholdScore, oracle_f1: float) -> dict:
    return {
        "threshold": s.threshold,
        "precision": s.precision,
        "recall": s.recall,
        "f1": s.f1,
        "regret": oracle_f1 - s.f1,
    }


def _summarise(per: dict, dilutions: tuple[int, ...]) -> dict:
    out: dict = {}
    for f in dilutions:
        rows = [v[str(f)] for v in per.values()]
        methods = [m for m in rows[0] if isinstance(rows[0][m], dict) and "regret" in rows[0][m]]
        table = {}
        for m in methods:
            have = [r[m] for r in rows if m in r]
            reg = [r["regret"] for r in have]
            err = [r["precision_error"] for r in have if r.get("precision_error") is not None]
            table[m] = {
                "mean_f1": float(np.mean([r["f1"] for r in have])),
                "mean_regret": float(np.mean(reg)),
                "max_regret": float(np.max(reg)),
                "worst_pair": list(per)[int(np.argmax(reg))]
                if len(have) == len(per) and max(reg) > 0
                else None,
                "mean_precision_error": float(np.mean(err)) if err else None,
                "max_precision_error": float(np.max(err)) if err else None,
            }
        out[str(f)] = table
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def markdown(results: dict) -> str:
    """Summary per pack and dilution (F1 points), then every pair undiluted."""
    s = results["settings"]
    lines = [
        "# stilts bench threshold",
        "",
        f"Ratio margin, k={s['k']}, retrieval max; dilution f: 1/f of the gold pairs kept (both "
        "sides of the others removed). Regret = oracle F1 - F1; precision error = |estimated - "
        "true precision| at the chosen threshold (F1 and precision in points).",
        "",
    ]
    for pack, r in results["packs"].items():
        lines += [f"## {pack}", ""]
        lines += [
            "| dilution | method | mean F1 | mean regret | max regret (pair) | mean precision "
            "error | max precision error |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for f, table in r["summary"].items():
            for m, v in table.items():
                worst = f" ({v['worst_pair']})" if v["worst_pair"] else ""
                lines.append(
                    f"| {f}x | {m} | {_pct(v['mean_f1'])} | {_pct(v['mean_regret'])} | "
                    f"{_pct(v['max_regret'])}{worst} | {_pct(v['mean_precision_error'])} | "
                    f"{_pct(v['max_precision_error'])} |"
                )
        lines += ["", "Per pair, undiluted (F1; auto: estimated / true precision):", ""]
        lines += [
            "| pair | gold | oracle F1 (t) | auto F1 (t) | auto est. / true P | calibrated same "
            "domain | calibrated other domain | fixed 1.04 | fixed 1.06 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for xx, by_f in r["pairs"].items():
            v = by_f.get("1")
            if v is None:
                continue
            auto = v[autothreshold.DEFAULT_METHOD]
            cal = v.get("calibrated (same domain)", {})
            cross = v.get("calibrated (other domain)", {})
            lines.append(
                f"| {xx} | {v['n_gold']} | {_pct(v['oracle']['f1'])} "
                f"({v['oracle']['threshold']:.4f}) | {_pct(auto['f1'])} "
                f"({auto['threshold']:.4f}) | {_pct(auto['estimated_precision'])} / "
                f"{_pct(auto['precision'])} | {_pct(cal.get('f1'))} | {_pct(cross.get('f1'))} | "
                f"{_pct(v['fixed 1.04']['f1'])} | {_pct(v['fixed 1.06']['f1'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def read_packs(dirs: list[str | Path], max_src: int | None = None) -> dict:
    """``{pack name: {xx: the evaluation split}}`` of BUCC-layout directories (named by the
    directory, or its parent when it is called ``bucc``)."""
    packs = {}
    for d in dirs:
        p = Path(d)
        name = p.parent.name if p.name == "bucc" else p.name
        sets = bdata.read_bucc(p)
        packs[name] = {
            xx: splits[bdata.eval_split(splits)].subsample(max_src) for xx, splits in sets.items()
        }
    return packs
