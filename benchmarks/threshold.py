"""``stilts bench threshold``: how well ``--threshold auto`` chooses, measured on sets with gold.

For every BUCC-layout pack and language pair, at each **share** of true pairs:

- ``pack``: the pack's set as it is (20-35 % of the xx sentences have their translation);
- shares such as 1 %, 2 %, 5 % (real mining jobs): with a filler directory for the pack
  (:mod:`stilts.benchmarks.pools`), a realistic pool of up to ``pool_size`` sentences per side
  (gold pairs at that share among untranslated text of the same language and domain); without
  one, the pack's own set with its gold pairs cut (both sides of the others removed) until the
  share is reached (:func:`dilute`; the pools stay small).

Each set is encoded once and mined once (exact k-NN, or ``index``), then P/R/F1 against the gold
of

- each estimator of :mod:`stilts.index.autothreshold` (``METHODS``): F1, regret (oracle F1 - F1),
  the estimated vs the true precision at the chosen threshold, and the estimated vs the true
  number of true candidates;
- the fixed thresholds of other toolkits (LASER/stopes: 1.04, 1.06);
- calibrated thresholds: the oracle threshold of the pack's other pairs pooled (leave-one-out,
  the same domain) and of the other packs pooled (another domain), at the same share;
- the oracle (F1-optimal on the set itself, needs gold);

and the mining job's cost at that size: the k-NN and estimate's wall time and the peak of the
memory numpy allocated for them (tracemalloc). The result is one dict (``results.json``);
:func:`markdown` renders the tables.
"""

from __future__ import annotations

import logging
import time
import tracemalloc
from pathlib import Path

import numpy as np

from stilts.benchmarks import data as bdata
from stilts.benchmarks import metrics, pools
from stilts.benchmarks.accuracy import Candidates, label
from stilts.index import autothreshold, mining

LOG = logging.getLogger(__name__)

FIXED = (1.04, 1.06)
SHARES = (0.01, 0.02, 0.05)
POOL_SIZE = 50_000


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
        f"{s.split}-diluted{factor}",
        [i for i, _ in src],
        [t for _, t in src],
        [i for i, _ in en],
        [t for _, t in en],
        keep,
        s.files,
    )


class _Mined:
    """One set mined once: labelled candidates and every estimator's choice."""

    def __init__(self, s: bdata.BuccSet, src, en, k: int, margin: str, index: str):
        tracemalloc.start()
        t0 = time.perf_counter()
        wide = mining.neighbours(src, en, mining.neighbours_needed(k, "auto"), index=index)
        pairs, self.estimates = None, {}
        for method in autothreshold.METHODS:
            pairs, self.estimates[method] = mining.estimate_candidates(
                wide, k=k, margin=margin, retrieval="max", method=method
            )
        self.seconds = time.perf_counter() - t0
        self.peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        self.sizes = {"n_src": len(s.src), "n_en": len(s.en), "n_gold": len(s.gold)}
        self.split = s.split
        rows_s = [p.src for p in pairs]
        rows_t = [p.tgt for p in pairs]
        self.labelled: Candidates = label(s, rows_s, rows_t, [p.score for p in pairs])


def share_sets(
    s: bdata.BuccSet,
    shares: tuple[float, ...],
    fillers: pools.Fillers | None,
    tatoeba: bdata.TatoebaSet | None = None,
    pool_size: int = POOL_SIZE,
    seed: int = 0,
) -> dict[str, bdata.BuccSet]:
    """``{"pack": s, "0.01": ..., ...}``: the set at each share of xx sentences with a translation:
    a realistic pool of ``s``'s gold (and ``tatoeba``'s) with ``fillers`` where they give one
    with at least :data:`~stilts.benchmarks.pools.MIN_GOLD` gold pairs, else ``s`` diluted (its
    split says which: ``pool...`` or the pack's)."""
    material = None
    if fillers is not None:
        gold = round(max(shares, default=0) * pool_size)  # what the largest pool needs
        material = pools.material(s, tatoeba, fillers, seed, pool_size, gold)
    out = {"pack": s}
    for share in shares:
        n = pools.pool_size_at(material, share, pool_size) if material is not None else 0
        if share * n >= pools.MIN_GOLD:
            out[f"{share:g}"] = pools.pool(material, share, pool_size)
        else:
            f = max(round(len(s.gold) / max(share * len(s.src_ids), 1e-9)), 1)
            out[f"{share:g}"] = dilute(s, f)
    return out


def run(
    packs: dict[str, dict[str, bdata.BuccSet]],
    encode,
    *,
    shares: tuple[float, ...] = SHARES,
    fillers: dict[str, pools.Fillers] | None = None,
    tatoeba: dict[str, dict[str, bdata.TatoebaSet]] | None = None,
    pool_size: int = POOL_SIZE,
    k: int = 4,
    margin: str = "ratio",
    index: str = "flat",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Score every method on every pack x pair x share.

    Args:
        packs: ``{pack name: {xx: BuccSet}}`` (one split per pair).
        encode: ``(texts, lang) -> (n, dim)`` L2-normalised vectors.
        shares: shares of xx sentences with a translation (besides the pack's own).
        fillers: ``{pack name: Fillers}``: realistic pools for those packs.
        tatoeba: ``{pack name: {xx: TatoebaSet}}``: more gold pairs for the pools.
        pool_size: at most this many sentences per side of a pool.
        k, margin: mining settings (retrieval ``max``); index: the k-NN's index kind.
        seed: the pools' seed.
        progress: a tqdm bar over the pairs.
    """
    fillers, tatoeba = fillers or {}, tatoeba or {}
    mined: dict[str, dict[str, dict[str, _Mined]]] = {}
    seconds = 0.0
    items = [(p, xx) for p, sets in packs.items() for xx in sets]
    bar = items
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(items, desc="bench threshold", unit="pair")
    for pack, xx in bar:
        s = packs[pack][xx]
        t_set = tatoeba.get(pack, {}).get(xx)
        sets = share_sets(s, shares, fillers.get(pack), t_set, pool_size, seed)
        for share, d in sets.items():
            t0 = time.perf_counter()
            src, en = encode(d.src, xx), encode(d.en, "en")
            seconds += time.perf_counter() - t0
            m = _Mined(d, src, en, k, margin, index)
            mined.setdefault(pack, {}).setdefault(xx, {})[share] = m
            LOG.info(
                "%s %s-en share %s: %d x %d, oracle F1 %.3f, auto F1 %.3f",
                pack, xx, share, len(d.src), len(d.en), m.labelled.oracle().f1,
                m.labelled.at(_threshold(m.estimates[autothreshold.DEFAULT_METHOD])).f1,
            )  # fmt: skip
    share_keys = ["pack", *(f"{x:g}" for x in shares)]
    results: dict = {
        "settings": {
            "k": k,
            "margin": margin,
            "retrieval": "max",
            "index": index,
            "shares": share_keys,
            "pool_size": pool_size,
            "seed": seed,
            "pools": {p: ("realistic" if p in fillers else "diluted") for p in packs},
        },
        "encode_seconds": round(seconds, 1),
        "packs": {},
    }
    for pack, pairs in mined.items():
        per: dict = {}
        for xx, by_share in pairs.items():
            for share, m in by_share.items():
                others = [p[share].labelled for x, p in pairs.items() if x != xx]
                cross = [
                    p[share].labelled
                    for name, other in mined.items()
                    if name != pack
                    for p in other.values()
                ]
                per.setdefault(xx, {})[share] = _evaluate(m, others, cross)
        results["packs"][pack] = {"pairs": per, "summary": _summarise(per, share_keys)}
    return results


def _threshold(est: autothreshold.ThresholdEstimate) -> float:
    return est.threshold if est.threshold is not None else -np.inf


def _evaluate(m: _Mined, others: list[Candidates], cross: list[Candidates]) -> dict:
    c = m.labelled
    oracle = c.oracle()
    row: dict = {
        **m.sizes,
        "pool": "realistic"
        if m.split.startswith("pool")
        else ("diluted" if "diluted" in m.split else "pack"),
        "share": round(m.sizes["n_gold"] / max(m.sizes["n_src"], 1), 4),
        "n_candidates": len(c.scores),
        "true_candidates": int(c.correct.sum()),
        "seconds": round(m.seconds, 2),
        "peak_mb": round(m.peak_mb, 1),
        "oracle": _score(oracle, oracle.f1),
    }
    for method, est in m.estimates.items():
        got = c.at(_threshold(est))
        row[method] = {
            **_score(got, oracle.f1),
            "estimated_precision": est.precision,
            "precision_interval": est.precision_interval,
            # signed: > 0 when the estimate promised more than it delivered
            "precision_error": None if est.precision is None else est.precision - got.precision,
            "estimated_true_pairs": est.true_pairs,
            "regime": est.regime,
            "weak": est.weak,
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


def _summarise(per: dict, shares: list[str]) -> dict:
    """Means and worsts per share and method, over the realistic pools where a share has any
    (the goals are set on them; a diluted set of the pack stands in for a pair whose sources are
    too small, and its unlabelled translations count as false), else over every pair."""
    out: dict = {}
    for share in shares:
        rows = {xx: v[share] for xx, v in per.items() if share in v}
        realistic = {xx: r for xx, r in rows.items() if r["pool"] == "realistic"}
        left_out = sorted(set(rows) - set(realistic)) if realistic else []
        rows = realistic or rows
        if not rows:
            continue
        first = next(iter(rows.values()))
        methods = [m for m, v in first.items() if isinstance(v, dict) and "regret" in v]
        table = {}
        for method in methods:
            have = {xx: r[method] for xx, r in rows.items() if method in r}
            reg = np.array([v["regret"] for v in have.values()])
            err = [
                v["precision_error"] for v in have.values() if v.get("precision_error") is not None
            ]
            table[method] = {
                "mean_f1": float(np.mean([v["f1"] for v in have.values()])),
                "mean_regret": float(reg.mean()),
                "max_regret": float(reg.max()),
                "worst_pair": list(have)[int(np.argmax(reg))] if reg.max() > 0 else None,
                "mean_precision_error": float(np.mean(np.abs(err))) if err else None,
                "max_overestimate": float(np.max(err)) if err else None,
            }
        table["sizes"] = {
            "mean_share": float(np.mean([r["share"] for r in rows.values()])),
            "mean_n_src": float(np.mean([r["n_src"] for r in rows.values()])),
            "mean_n_en": float(np.mean([r["n_en"] for r in rows.values()])),
            "mean_seconds": float(np.mean([r["seconds"] for r in rows.values()])),
            "max_peak_mb": float(np.max([r["peak_mb"] for r in rows.values()])),
            "left_out": left_out,
        }
        out[share] = table
    return out


def _pct(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def markdown(results: dict) -> str:
    """Summary per pack and share (F1 points), then every pair at every share."""
    st = results["settings"]
    default = autothreshold.DEFAULT_METHOD
    lines = [
        "# stilts bench threshold",
        "",
        f"Ratio margin, k={st['k']}, retrieval max, k-NN {st['index']}; pools: "
        + ", ".join(f"{p} {kind}" for p, kind in st["pools"].items())
        + f" (at most {st['pool_size']} sentences per side, seed {st['seed']}). Share: xx "
        "sentences with a translation. Regret = oracle F1 - F1; precision error = estimated - "
        "true precision at the chosen threshold (> 0: over-estimated); F1 and precision in points.",
        "",
    ]
    for pack, r in results["packs"].items():
        lines += [f"## {pack}", ""]
        lines += [
            "| share | xx x en sentences | method | mean F1 | mean regret | max regret (pair) | "
            "mean abs. precision error | max over-estimate |",
            "|---|---:|---|---:|---:|---:|---:|---:|",
        ]
        left_out = []
        for share, table in r["summary"].items():
            sz = table["sizes"]
            left_out += [f"{xx} at {share}" for xx in sz.get("left_out", [])]
            for method, v in table.items():
                if method == "sizes":
                    continue
                worst = f" ({v['worst_pair']})" if v["worst_pair"] else ""
                lines.append(
                    f"| {share} ({_pct(sz['mean_share'])} %) | {sz['mean_n_src']:.0f} x "
                    f"{sz['mean_n_en']:.0f} | {method} | {_pct(v['mean_f1'])} | "
                    f"{_pct(v['mean_regret'])} | {_pct(v['max_regret'])}{worst} | "
                    f"{_pct(v['mean_precision_error'])} | {_pct(v['max_overestimate'], True)} |"
                )
        if left_out:
            lines += [
                "",
                "Realistic pools only; left out of these means (diluted sets of the pack, its "
                "sources too small for a realistic pool; in the per-pair table): "
                + ", ".join(left_out)
                + ".",
            ]
        lines += ["", f"Per pair ({default}; true pairs = gold pairs among the candidates):", ""]
        lines += [
            "| pair | share | xx x en | oracle F1 | auto F1 | regret | est. / true P (interval) "
            "| est. / true pairs | regime | calibrated same / other domain | fixed 1.06 | "
            "k-NN + estimate s | peak MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for xx, by_share in r["pairs"].items():
            for share, v in by_share.items():
                a = v[default]
                cal = v.get("calibrated (same domain)", {})
                cross = v.get("calibrated (other domain)", {})
                lo, hi = a["precision_interval"] or (None, None)
                weak = " weak" if a["weak"] else ""
                lines.append(
                    f"| {xx} | {share}{' (diluted)' if v['pool'] == 'diluted' else ''} | "
                    f"{v['n_src']} x {v['n_en']} | {_pct(v['oracle']['f1'])} | "
                    f"{_pct(a['f1'])} | {_pct(a['regret'])} | {_pct(a['estimated_precision'])} / "
                    f"{_pct(a['precision'])} ({_pct(lo)}-{_pct(hi)}) | "
                    f"{a['estimated_true_pairs'] or 0:.0f} / {v['true_candidates']} | "
                    f"{a['regime'] or '-'}{weak} | {_pct(cal.get('f1'))} / {_pct(cross.get('f1'))} "
                    f"| {_pct(v['fixed 1.06']['f1'])} | {v['seconds']:.1f} | {v['peak_mb']:.0f} |"
                )
        lines.append("")
    return "\n".join(lines)


def read_packs(dirs: list[str | Path], max_src: int | None = None) -> dict:
    """``{pack name: {xx: the evaluation split}}`` of BUCC-layout directories (named by the
    directory, or its parent when it is called ``bucc``)."""
    packs = {}
    for d in dirs:
        p = Path(d)
        name = pack_name(p)
        sets = bdata.read_bucc(p)
        packs[name] = {
            xx: splits[bdata.eval_split(splits)].subsample(max_src) for xx, splits in sets.items()
        }
    return packs


def one_pool(
    bucc_dir: str | Path,
    fillers_dir: str | Path,
    xx: str,
    share: str,
    shares: tuple[float, ...] = SHARES,
    pool_size: int = POOL_SIZE,
    seed: int = 0,
) -> bdata.BuccSet:
    """The set of one pair at ``share`` (``"pack"``, ``"0.01"``, ...) as this bench builds it
    with ``shares``, ``pool_size`` and ``seed``."""
    fillers, tatoeba = read_pool_sources([bucc_dir], fillers_dir)
    name = pack_name(bucc_dir)
    s = read_packs([bucc_dir])[name][xx]
    t_set = tatoeba.get(name, {}).get(xx)
    return share_sets(s, shares, fillers.get(name), t_set, pool_size, seed)[share]


def pack_name(bucc_dir: str | Path) -> str:
    p = Path(bucc_dir)
    return p.parent.name if p.name == "bucc" else p.name


def read_pool_sources(dirs: list[str | Path], fillers_dir: str | Path | None):
    """(``{pack: Fillers}``, ``{pack: {xx: TatoebaSet}}``) for the packs whose filler directory
    ``fillers_dir/<pack>`` exists; a pack's Tatoeba-style files (``<pack>/tatoeba``) add gold."""
    fillers, tatoeba = {}, {}
    if fillers_dir is None:
        return fillers, tatoeba
    for d in dirs:
        name = pack_name(d)
        where = Path(fillers_dir) / name
        if not where.is_dir():
            LOG.warning("no filler directory %s: %s's shares are diluted sets", where, name)
            continue
        fillers[name] = pools.read_fillers(where)
        tdir = Path(d).parent / "tatoeba" if Path(d).name == "bucc" else None
        if tdir is not None and tdir.is_dir():
            tatoeba[name] = bdata.read_tatoeba(tdir)
    return fillers, tatoeba
