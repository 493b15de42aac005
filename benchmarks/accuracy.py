"""``stilts bench accuracy``: Tatoeba top-1 accuracy and BUCC mining F1 for several systems.

For each system (stilts models under test, then baselines) and each language:

- Tatoeba: encode both sides, retrieve xx->en and en->xx with cosine and with margin scoring
  (:mod:`stilts.benchmarks.scoring`, which calls :mod:`stilts.index`), top-1 accuracy.
- BUCC: encode both sides, mine ALL candidate pairs with their margin scores
  (:func:`stilts.index.mining.mine`, no threshold), then P/R/F1 at the oracle (F1-optimal) threshold
  and at a calibrated threshold chosen on other data and applied unchanged: the ``sample`` split when
  present, else ``--calibrate-on``, else the other language pairs pooled (leave-one-out); and at
  the threshold ``stilts mine --threshold auto`` chooses from the set's own scores (no gold).

The result is one dict (``results.json``); :mod:`stilts.benchmarks.accuracy_report` renders it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from stilts.benchmarks import data as bdata
from stilts.benchmarks import metrics, scoring
from stilts.benchmarks.systems import System
from stilts.index import autothreshold, mining
from stilts.records import SCORINGS

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Settings:
    """How candidates are scored (the same for every system)."""

    scoring: str = "margin"  # the headline Tatoeba scoring (both are always reported)
    k: int = 4
    margin: str = "ratio"
    retrieval: str = "max"


@dataclasses.dataclass
class Candidates:
    """All mined candidate pairs of one BUCC set, scored, with their gold labels."""

    scores: np.ndarray
    correct: np.ndarray
    n_gold: int

    @staticmethod
    def pool(items: list[Candidates]) -> Candidates:
        return Candidates(
            np.concatenate([c.scores for c in items]) if items else np.zeros(0),
            np.concatenate([c.correct for c in items]) if items else np.zeros(0, dtype=bool),
            sum(c.n_gold for c in items),
        )

    def oracle(self) -> metrics.ThresholdScore:
        return metrics.oracle_threshold(self.scores, self.correct, self.n_gold)

    def at(self, threshold: float) -> metrics.ThresholdScore:
        return metrics.at_threshold(self.scores, self.correct, self.n_gold, threshold)


class _Clock:
    """Encode time and sentence count per system (informational; `bench speed` measures speed)."""

    def __init__(self, system: System):
        self.system = system
        self.seconds = 0.0
        self.sentences = 0

    def encode(self, texts: list[str], lang: str) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.system.encode(texts, lang)
        self.seconds += time.perf_counter() - t0
        self.sentences += len(texts)
        return out

    def to_dict(self) -> dict:
        sps = self.sentences / self.seconds if self.seconds else None
        return {"sentences": self.sentences, "seconds": self.seconds, "sentences_per_second": sps}


# --- Tatoeba ----------------------------------------------------------------------------------


def tatoeba_language(clock: _Clock, s: bdata.TatoebaSet, settings: Settings) -> dict:
    """Accuracy both ways, both scorings, for one language."""
    src = clock.encode(s.src, s.lang)
    en = clock.encode(s.en, "en")
    out: dict = {"n": len(s)}
    nb = scoring.neighbours(src, en, settings.k)
    for sc in SCORINGS:
        xx2en, en2xx = scoring.tatoeba_predictions(
            src, en, sc, k=settings.k, margin=settings.margin, nb=nb
        )
        out[sc] = {
            "xx2en": metrics.top1_accuracy(xx2en),
            "en2xx": metrics.top1_accuracy(en2xx),
        }
    out["xx2en"] = out[settings.scoring]["xx2en"]
    out["en2xx"] = out[settings.scoring]["en2xx"]
    return out


def _tatoeba_means(per: dict) -> dict:
    out = {
        "mean_xx2en": metrics.mean(v["xx2en"] for v in per.values()),
        "mean_en2xx": metrics.mean(v["en2xx"] for v in per.values()),
    }
    for sc in SCORINGS:
        out[sc] = {
            "mean_xx2en": metrics.mean(v[sc]["xx2en"] for v in per.values()),
            "mean_en2xx": metrics.mean(v[sc]["en2xx"] for v in per.values()),
        }
    return out


def run_tatoeba(
    clock: _Clock, sets: dict[str, bdata.TatoebaSet], settings: Settings, progress: bool = True
) -> dict:
    per: dict[str, dict] = {}
    skipped = [x for x in sets if not clock.system.covers(x)]
    langs = [x for x in sets if clock.system.covers(x)]
    bar = _bar(langs, f"tatoeba {clock.system.name}", progress)
    for xx in bar:
        t0 = time.perf_counter()
        per[xx] = tatoeba_language(clock, sets[xx], settings)
        v = per[xx]
        LOG.info(
            "tatoeba %s %s: xx->en %.3f / %.3f, en->xx %.3f / %.3f (cosine / margin, %d pairs, %.1fs)",
            clock.system.name,
            xx,
            v["cosine"]["xx2en"],
            v["margin"]["xx2en"],
            v["cosine"]["en2xx"],
            v["margin"]["en2xx"],
            v["n"],
            time.perf_counter() - t0,
        )
    return {
        "scoring": settings.scoring,
        "k": settings.k,
        "n_languages": len(per),
        **_tatoeba_means(per),
        "per_language": per,
        "skipped_languages": skipped,
    }


# --- BUCC -------------------------------------------------------------------------------------


def bucc_candidates(clock: _Clock, s: bdata.BuccSet, settings: Settings, margin: str) -> Candidates:
    """Encode one BUCC set and mine every candidate pair (no threshold)."""
    src = clock.encode(s.src, s.lang)
    en = clock.encode(s.en, "en")
    nb = scoring.neighbours(src, en, settings.k)
    return label(s, *scoring.candidates(nb, margin, settings.retrieval))


def label(s: bdata.BuccSet, rows_src, rows_en, scores) -> Candidates:
    """Mined rows -> unique (xx id, en id) candidates with their best score and gold label."""
    best: dict[tuple[str, str], float] = {}
    for i, j, sc in zip(rows_src, rows_en, scores, strict=True):
        key = (s.src_ids[int(i)], s.en_ids[int(j)])
        if key not in best or sc > best[key]:
            best[key] = float(sc)
    keys = list(best)
    return Candidates(
        np.asarray([best[key] for key in keys], dtype=np.float64),
        np.asarray([key in s.gold for key in keys], dtype=bool),
        len(s.gold),
    )


def _bucc_sets(
    sets: dict[str, dict[str, bdata.BuccSet]], max_src: int | None
) -> dict[str, dict[str, bdata.BuccSet]]:
    return {
        xx: {sp: b.subsample(max_src) for sp, b in splits.items()} for xx, splits in sets.items()
    }


def _calibration_source(
    lang: str,
    sample: dict[str, Candidates],
    calib: dict[str, Candidates] | None,
    calib_path: str | None,
    evals: dict[str, Candidates],
) -> tuple[Candidates | None, str]:
    if lang in sample:
        return sample[lang], "sample split"
    if calib:
        if lang in calib:
            return calib[lang], f"--calibrate-on {calib_path} ({lang}-en)"
        return Candidates.pool(list(calib.values())), (
            f"--calibrate-on {calib_path} (pooled: {', '.join(sorted(calib))})"
        )
    others = [x for x in evals if x != lang]
    if others:
        pooled = Candidates.pool([evals[x] for x in others])
        return pooled, f"leave-one-out (pooled: {', '.join(others)})"
    return None, "none (no sample split, no --calibrate-on, no other pair)"


def run_bucc(
    clock: _Clock,
    sets: dict[str, dict[str, bdata.BuccSet]],
    settings: Settings,
    calibrate_on: dict[str, dict[str, bdata.BuccSet]] | None = None,
    calibrate_path: str | None = None,
    progress: bool = True,
) -> dict:
    system = clock.system
    langs = [x for x in sets if system.covers(x)]
    skipped = [x for x in sets if not system.covers(x)]
    evals: dict[str, Candidates] = {}
    evals_cos: dict[str, Candidates] = {}
    auto: dict[str, autothreshold.ThresholdEstimate] = {}
    sample: dict[str, Candidates] = {}
    split_of: dict[str, str] = {}
    sizes: dict[str, dict] = {}
    for xx in _bar(langs, f"bucc {system.name}", progress):
        split = bdata.eval_split(sets[xx])
        split_of[xx] = split
        s = sets[xx][split]
        src = clock.encode(s.src, xx)
        en = clock.encode(s.en, "en")
        nb, wide = scoring.neighbours_for_auto(src, en, settings.k)
        mined = scoring.candidates(nb, settings.margin, settings.retrieval)
        evals[xx] = label(s, *mined)
        evals_cos[xx] = label(s, *scoring.candidates(nb, "absolute", settings.retrieval))
        auto[xx] = mining.estimate_candidates(
            wide, k=settings.k, margin=settings.margin, retrieval=settings.retrieval
        )[1]
        sizes[xx] = {"n_src": len(s.src), "n_en": len(s.en), "n_gold": len(s.gold)}
        LOG.info(
            "bucc %s %s-en: oracle F1 %.3f (margin), %.3f (cosine)",
            system.name,
            xx,
            evals[xx].oracle().f1,
            evals_cos[xx].oracle().f1,
        )
        if "sample" in sets[xx] and split != "sample":
            sample[xx] = bucc_candidates(clock, sets[xx]["sample"], settings, settings.margin)
    calib: dict[str, Candidates] | None = None
    if calibrate_on and not sample.keys() >= set(langs):
        calib = {}
        for xx in _bar([x for x in calibrate_on if system.covers(x)], "calibrate", progress):
            cs = calibrate_on[xx][bdata.eval_split(calibrate_on[xx])]
            calib[xx] = bucc_candidates(clock, cs, settings, settings.margin)
    per: dict[str, dict] = {}
    for xx in langs:
        oracle = evals[xx].oracle()
        cal_set, source = _calibration_source(xx, sample, calib, calibrate_path, evals)
        cal = None
        if cal_set is not None:
            thr = cal_set.oracle().threshold
            cal = evals[xx].at(thr)
        cos_oracle = evals_cos[xx].oracle()
        t_auto = auto[xx].threshold
        at_auto = evals[xx].at(t_auto if t_auto is not None else -np.inf)
        per[xx] = {
            "f1_oracle": oracle.f1,
            "f1_calibrated": cal.f1 if cal else None,
            "precision": oracle.precision,
            "recall": oracle.recall,
            "threshold": oracle.threshold,
            "precision_calibrated": cal.precision if cal else None,
            "recall_calibrated": cal.recall if cal else None,
            "threshold_calibrated": cal.threshold if cal else None,
            "calibrated_on": source,
            "f1_auto": at_auto.f1,
            "precision_auto": at_auto.precision,
            "recall_auto": at_auto.recall,
            "threshold_auto": t_auto,
            "precision_auto_estimated": auto[xx].precision,
            "f1_oracle_cosine": cos_oracle.f1,
            "threshold_cosine": cos_oracle.threshold,
            "split": split_of[xx],
            "n_candidates": len(evals[xx].scores),
            "candidate_recall": float(evals[xx].correct.sum() / max(evals[xx].n_gold, 1)),
            **sizes[xx],
        }
    return {
        "margin": settings.margin,
        "retrieval": settings.retrieval,
        "k": settings.k,
        "n_languages": len(per),
        "mean_f1_oracle": metrics.mean(v["f1_oracle"] for v in per.values()),
        "mean_f1_calibrated": metrics.mean(v["f1_calibrated"] for v in per.values()),
        "mean_f1_auto": metrics.mean(v["f1_auto"] for v in per.values()),
        "cosine": {"mean_f1_oracle": metrics.mean(v["f1_oracle_cosine"] for v in per.values())},
        "per_language": per,
        "skipped_languages": skipped,
    }


def _bar(items: list[str], desc: str, progress: bool):
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="lang")


# --- comparison -------------------------------------------------------------------------------


def compare(models: dict[str, dict], reference: str) -> dict:
    """Means of every system on the languages all of them cover, and deltas vs ``reference``."""
    out: dict = {"reference": reference}
    for task, keys in (
        ("tatoeba", ("xx2en", "en2xx")),
        ("bucc", ("f1_oracle", "f1_calibrated", "f1_auto")),
    ):
        have = [m[task]["per_language"] for m in models.values() if task in m]
        if not have:
            continue
        common = sorted(set.intersection(*(set(p) for p in have)))
        table = {}
        for name, m in models.items():
            if task not in m:
                continue
            per = m[task]["per_language"]
            table[name] = {key: metrics.mean(per[x][key] for x in common) for key in keys}
            if task == "tatoeba":
                for sc in SCORINGS:
                    for key in keys:
                        table[name][f"{sc}_{key}"] = metrics.mean(per[x][sc][key] for x in common)
        ref = table.get(reference, {})
        for row in table.values():
            row["delta"] = {
                key: (v - ref[key]) if v is not None and ref.get(key) is not None else None
                for key, v in list(row.items())
            }
        out[task] = {"common_languages": common, "means": table}
    return out


def run(
    systems: list[System],
    tatoeba: dict[str, bdata.TatoebaSet] | None,
    bucc: dict[str, dict[str, bdata.BuccSet]] | None,
    settings: Settings | None = None,
    calibrate_on: dict[str, dict[str, bdata.BuccSet]] | None = None,
    calibrate_path: str | Path | None = None,
    bucc_max: int | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate every system on the given sets.

    Args:
        systems: stilts models first (the first one is the reference for deltas), then baselines.
        tatoeba: sets from :func:`stilts.benchmarks.data.read_tatoeba`, or None to skip.
        bucc: sets from :func:`stilts.benchmarks.data.read_bucc`, or None to skip.
        settings: scoring settings.
        calibrate_on: BUCC sets to choose the calibrated threshold on (when no sample split).
        calibrate_path: the directory they came from (recorded in the report).
        bucc_max: subsample each BUCC set to this many xx sentences (shares kept).
        progress: tqdm bars.

    Returns:
        ``{"settings", "models": {name: {...}}, "comparison"}``.
    """
    settings = settings or Settings()
    if settings.scoring not in SCORINGS:
        from stilts.errors import invalid

        raise invalid(f"scoring must be one of {SCORINGS}", "scoring")
    if bucc is not None:
        bucc = _bucc_sets(bucc, bucc_max)
    if calibrate_on is not None:
        calibrate_on = _bucc_sets(calibrate_on, bucc_max)
    models: dict[str, dict] = {}
    for system in systems:
        clock = _Clock(system)
        t0 = time.perf_counter()
        entry: dict = {"role": system.role}
        if tatoeba:
            entry["tatoeba"] = run_tatoeba(clock, tatoeba, settings, progress)
        if bucc:
            entry["bucc"] = run_bucc(
                clock,
                bucc,
                settings,
                calibrate_on,
                str(calibrate_path) if calibrate_path else None,
                progress,
            )
        entry["system"] = system.info()
        entry["encode"] = clock.to_dict()
        entry["seconds"] = time.perf_counter() - t0
        models[system.name] = entry
        LOG.info("%s done in %.1fs", system.name, entry["seconds"])
    return {
        "settings": dataclasses.asdict(settings) | {"bucc_max": bucc_max},
        "models": models,
        "comparison": compare(models, systems[0].name) if systems else {},
    }
