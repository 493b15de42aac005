"""The mining threshold chosen from the job's own scores (``stilts mine --threshold auto``).

The miner's candidates (:func:`stilts.index.mining.select`) mix true pairs with false ones: the
best match of a sentence whose translation is not in the other pool. Nothing labels them, so the
estimate needs a model of how high a false pair scores: a **null**. Four estimators share this
module; the first is the default:

- ``order-stats`` (default): every candidate's own null from the order statistics of its k-NN
  rows (:mod:`stilts.index.ordernull`: above a row's best other cosine, a false best match has a
  tail whose scale the row's lower spacings give). Summed over candidates it gives the expected
  false pairs F(t) at or above every threshold t. Two regimes:

  - *common* (true pairs a sizeable share, as in the dev packs' BUCC sets): each candidate's null
    is weighted by its chance of being false, fitted by EM on score bins; when that count of
    true pairs stays within :data:`RUNAWAY` times the unweighted one, true pairs form a
    component of their own and the decoy mixture below fits it (unless it runs away too);
  - *rare* (true pairs a few percent, as in real mining jobs): the ``capped`` nulls (a pair found
    from one side stays below the other row's best margin; the excess over the anchor has a
    normal tail), levelled so that they count the candidates between the score quantiles
    :data:`LEVEL_BAND`, where nearly all are false. At the top, where candidates are mostly
    true, a candidate's null counts by its bin's chance of being false. The excess of candidates
    over nulls, R(t) - F(t), is the true pairs at or above t only where they are most of what is
    kept (at least :data:`TRUE_MAJORITY`; lower down a small error in a large false count would
    pass for true pairs). But true pairs reach down into the false bulk (hard translations), so
    the largest such excess misses a fifth to a third of them, and a threshold chosen for that
    count sits too high. Their number is the total of a normal distribution of true scores,
    N Q((t - mu) / sd), fitted to the excess where it is a majority, between that largest excess
    and :data:`TRUE_TAIL_CAP` times it.

  The threshold comes from the normal tail's F(t); the same nulls with an exponential tail (the
  heavier of two forms the rows' spacings allow) give a second count, and the precision is
  reported on their mean, with an interval that spans both.
- ``decoy-mixture``: decoys (the same selection with every sentence's nearest neighbour left
  out), their density shifted by a fitted offset as the false component and a normal true
  component, by EM. Accurate when true pairs are 20 % or more of the candidates; when they are
  rare its decoys (second-best scores) are lighter-tailed than the false pairs and it
  overestimates precision.
- ``decoy-fdr``: decoy counts scaled by the candidates/decoys ratio below the decoy median.
- ``mixture``: two normal components on the candidate scores alone.

From F(t) and the candidates R(t) at or above t: T(t) = R(t) - F(t) true pairs, precision T/R,
recall T / n_true, expected F1 2T / (R + n_true). The threshold is the best expected F1, or with
``target_precision`` the lowest threshold whose estimated precision reaches it (among thresholds
keeping at least :data:`MIN_KEPT` pairs).

**Uncertainty.** The false pairs kept are a sum of independent chances with mean F, so their
spread is at most sqrt(F): ``precision_interval`` runs from the heavier count plus 1.96 sqrt(F)
to the lighter one minus it (for the decoy methods: F +- 1.96 sqrt(F)). The estimate is **weak**
when fewer than :data:`MIN_TRUE` true pairs are estimated or the counting interval alone (the
reported count +- 1.96 sqrt(F)) is wider than :data:`MAX_INTERVAL`; then the threshold is chosen
on the pessimistic count (the interval's lower end), that is the reported precision, and
``reason`` says why.

Example:
    >>> nb = mining.neighbours(src, tgt, mining.neighbours_needed(k, "auto"))
    >>> pairs, est = mining.select_auto(nb, k=4, threshold="auto")
    >>> est.threshold, est.precision, est.precision_interval
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.index.ordernull import CandidateNulls, normal_sf

LOG = logging.getLogger(__name__)

AUTO = "auto"
METHODS = ("order-stats", "decoy-mixture", "decoy-fdr", "mixture")
DEFAULT_METHOD = "order-stats"
# fewer candidates (or decoys) than this: no estimate, every candidate is kept (documented)
MIN_CANDIDATES = 100
# a threshold must keep at least this many candidates (a precision of 1 pair is noise)
MIN_KEPT = 10
# the EM fits on at most this many scores (a seeded sample); counts always use every score
FIT_SAMPLE = 50_000
HISTOGRAM_BINS = 40
# thresholds tried: every distinct score up to this many, else the top ones and quantiles
MAX_GRID = 2048
# order-stats: EM weights whose true count exceeds the unweighted one this many times ran away
RUNAWAY = 4.0
# rare regime: the score quantiles where the nulls are levelled, and the share of what is kept
# an excess over the nulls must have to count as true pairs (the true pairs' normal is fitted there)
LEVEL_BAND = (0.2, 0.7)
TRUE_MAJORITY = 0.6
# the fitted true pairs are at most this many times the largest majority excess
TRUE_TAIL_CAP = 2.0
_WEIGHT_BINS, _WEIGHT_ROUNDS = 40, 5
# below this many estimated true pairs, or with a wider precision interval, the estimate is weak
MIN_TRUE = 30
MAX_INTERVAL = 0.2
_Z = 1.96
_EM_ROUNDS = 40
_OFFSETS = np.linspace(-1.0, 1.0, 81)  # in units of the decoys' standard deviation
_TRUE_FIT_MIN, _TRUE_FIT_POINTS = 5, 200  # thresholds the true pairs' normal is fitted on


@dataclasses.dataclass
class ThresholdEstimate:
    """The chosen threshold and what the fit expects of the pairs it keeps.

    Attributes:
        method: the estimator (:data:`METHODS`), or ``none`` when no estimate was possible.
        threshold: keep pairs scoring at least this (None: every candidate is kept).
        precision: estimated share of true pairs among those kept.
        recall: estimated share of the true candidate pairs that are kept.
        f1: the estimated F1 at the threshold.
        true_pairs: estimated true pairs among all candidates.
        candidates: candidate pairs scored.
        kept: candidates at or above the threshold.
        target_precision: the precision asked for, if any.
        target_met: whether the estimate reaches ``target_precision`` (None without one).
        reason: why no estimate was made (``method == "none"``), or why it is weak.
        histogram: ``edges`` and per-bin counts of the ``candidates`` and the ``decoys`` (for
            ``order-stats``: ``null``, the expected false pairs per bin).
        true_share: estimated true pairs / candidates.
        precision_interval: [low, high] of the precision at the threshold (95 %: both tail forms
            and the spread of the false count).
        regime: ``order-stats`` only: ``common`` or ``rare`` (see the module docstring).
        weak: the estimate is weak; the threshold was chosen on the pessimistic count and
            ``precision`` is the interval's lower end.
    """

    method: str
    threshold: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    true_pairs: float | None
    candidates: int
    kept: int
    target_precision: float | None = None
    target_met: bool | None = None
    reason: str | None = None
    histogram: dict | None = None
    true_share: float | None = None
    precision_interval: list[float] | None = None
    regime: str | None = None
    weak: bool = False

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("threshold", "precision", "recall", "f1", "true_pairs", "true_share"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 6)
        if d["precision_interval"] is not None:
            d["precision_interval"] = [round(float(v), 6) for v in d["precision_interval"]]
        return d

    def summary(self) -> str:
        """One line for the log."""
        if self.threshold is None:
            return f"threshold auto: no estimate ({self.reason}); kept all {self.kept} candidates"
        target = (
            f", target precision {self.target_precision:g}"
            + ("" if self.target_met else " NOT reached")
            if self.target_precision is not None
            else ""
        )
        lo, hi = self.precision_interval or (self.precision, self.precision)
        weak = f"; WEAK: {self.reason}" if self.weak else ""
        return (
            f"threshold auto ({self.method}): {self.threshold:.4f}, estimated precision "
            f"{self.precision:.3f} [{lo:.3f}, {hi:.3f}], recall {self.recall:.3f} ({self.kept} "
            f"of {self.candidates} candidates kept, ~{self.true_pairs:.0f} true, "
            f"{100 * (self.true_share or 0):.1f} %){target}{weak}"
        )


def is_auto(threshold: object) -> bool:
    return isinstance(threshold, str) and threshold == AUTO


def check(threshold: object, target_precision: float | None) -> None:
    """Validate ``threshold`` (a number, None or ``"auto"``) and ``target_precision``.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the option.
    """
    if isinstance(threshold, str) and not is_auto(threshold):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"threshold must be a number or 'auto', got {threshold[:40]!r}",
            "threshold",
        )
    if target_precision is None:
        return
    if (
        isinstance(target_precision, bool)
        or not isinstance(target_precision, int | float | np.floating)
        or not math.isfinite(target_precision)
        or not 0 < target_precision <= 1
    ):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"target_precision must be in (0, 1], got {target_precision!r}",
            "target_precision",
        )
    if threshold is not None and not is_auto(threshold):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "target_precision chooses the threshold: give it with threshold 'auto', not a number",
            "target_precision",
        )


def estimate(
    scores: np.ndarray,
    null: np.ndarray | CandidateNulls,
    *,
    target_precision: float | None = None,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> ThresholdEstimate:
    """Choose a threshold for candidate ``scores``.

    Args:
        scores: the candidates' margin scores.
        null: ``order-stats``: the candidates' nulls (:func:`stilts.index.ordernull.candidate_nulls`,
            row i for ``scores[i]``); the other methods: the decoys' scores.
        target_precision: the lowest threshold whose estimated precision reaches this, instead
            of the best expected F1.
        method: the estimator (:data:`METHODS`).
        seed: the EM's sample (decoy methods).

    Returns:
        The estimate; ``method="none"`` with every candidate kept when there are fewer than
        :data:`MIN_CANDIDATES` candidates or decoys to fit.

    Raises:
        StiltsError: INVALID_ARGUMENT for an unknown method or target precision, or a null that
            does not fit the method.
    """
    if method not in METHODS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"method must be one of {METHODS}, got {method!r}", "method"
        )
    check(AUTO, target_precision)
    if (method == "order-stats") != isinstance(null, CandidateNulls):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "order-stats takes the candidates' nulls, the decoy methods decoy scores",
            "method",
        )
    s = np.asarray(scores, dtype=np.float64)
    if method == "order-stats":
        if len(null) != len(s) or not np.isfinite(s).all():
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "one finite score per candidate null", "scores"
            )
        d, n_null = np.zeros(0), len(s)
    else:
        d = np.asarray(null, dtype=np.float64)
        s, d = s[np.isfinite(s)], d[np.isfinite(d)]
        n_null = len(d) if method != "mixture" else len(s)
    hist = _histogram(s, d)
    if len(s) < MIN_CANDIDATES or n_null < MIN_CANDIDATES:
        return ThresholdEstimate(
            "none",
            None,
            None,
            None,
            None,
            None,
            len(s),
            len(s),
            target_precision,
            None,
            f"{len(s)} candidates and {n_null} decoys; at least {MIN_CANDIDATES} of each are "
            "needed to estimate",
            hist,
        )
    grid = _grid(s)  # candidate thresholds, ascending
    kept = _count_at_or_above(s, grid)
    regime, heavy = None, None
    if method == "order-stats":
        # one fit, read at the thresholds and at the histogram's edges
        edges = np.asarray(hist["edges"], dtype=np.float64)
        false, f_edges, n_true, regime, heavy = _fit_order_stats(s, null, grid, edges)
        if len(edges):
            hist = {"edges": hist["edges"], "candidates": hist["candidates"]}
            hist["null"] = [round(float(v), 2) for v in f_edges[:-1] - f_edges[1:]]
    else:
        false, n_true = _FITS[method](s, d, grid, np.random.default_rng(seed))
    false = np.clip(false, 0.0, kept)
    # the false count the precision is reported on: with two tail forms (rare regime) their
    # mean, and the interval spans both, each with its counting spread
    heavy = false if heavy is None else np.clip(np.maximum(heavy, false), 0.0, kept)
    reported = (false + heavy) / 2
    spread = _Z * np.sqrt(reported)
    pessimistic = np.minimum(heavy + _Z * np.sqrt(heavy), kept)
    optimistic = np.maximum(false - _Z * np.sqrt(false), 0.0)
    reasons = []
    if n_true < MIN_TRUE:
        reasons.append(f"about {n_true:.0f} true pairs estimated (fewer than {MIN_TRUE})")

    def curves(f):
        true = np.maximum(kept - f, 0.0)
        precision = np.where(kept > 0, true / np.maximum(kept, 1), 1.0)
        return true, precision, 2 * true / np.maximum(kept + n_true, 1e-9)

    def at(f, i):
        return float(curves(f)[1][i])

    true, _, f1 = curves(false)
    i, met = _choose(grid, kept, curves(reported)[1], f1, target_precision, len(s))
    if 2 * spread[i] / max(kept[i], 1) > MAX_INTERVAL:
        reasons.append(f"the counting interval is {2 * spread[i] / max(kept[i], 1):.2f} wide")
    weak = bool(reasons)
    if weak:  # the conservative side: choose and report on the pessimistic false count
        reported = pessimistic
        true, precision, f1 = curves(reported)
        i, met = _choose(grid, kept, precision, f1, target_precision, len(s))
    low, high = at(pessimistic, i), at(optimistic, i)
    precision = curves(reported)[1]
    return ThresholdEstimate(
        method,
        float(grid[i]),
        float(precision[i]),
        float(min(true[i] / max(n_true, 1e-9), 1.0)),
        float(f1[i]),
        float(n_true),
        len(s),
        int(kept[i]),
        target_precision,
        met,
        "; ".join(reasons) or None,
        hist,
        float(n_true / len(s)),
        [float(max(low, 0.0)), float(min(high, 1.0))],
        regime,
        weak,
    )


def _choose(grid, kept, precision, f1, target_precision, n) -> tuple[int, bool | None]:
    """The best expected F1, or the lowest threshold reaching ``target_precision``."""
    usable = kept >= min(MIN_KEPT, n)
    if target_precision is None:
        return int(np.argmax(np.where(usable, f1, -1.0))), None
    ok = np.flatnonzero(usable & (precision >= target_precision - 1e-12))
    if len(ok):
        return int(ok[0]), True
    i = int(np.argmax(np.where(usable, precision, -1.0)))
    LOG.warning(
        "no threshold reaches the estimated precision %.3f; using the most precise one "
        "(%.3f at %.4f)",
        target_precision,
        precision[i],
        grid[i],
    )
    return i, False


def _grid(s: np.ndarray) -> np.ndarray:
    """Thresholds to try: every distinct score, or (past :data:`MAX_GRID`) the top half of the
    budget of distinct scores and quantiles for the rest."""
    u = np.unique(s)
    if len(u) <= MAX_GRID:
        return u
    half = MAX_GRID // 2
    rest = np.quantile(u[:-half], np.linspace(0, 1, half))
    return np.unique(np.concatenate([rest, u[-half:]]))


def _fit_order_stats(s: np.ndarray, nulls: CandidateNulls, grid: np.ndarray, extra: np.ndarray):
    """(expected false pairs at or above each threshold of ``grid``, the same at ``extra`` (read
    off the same fit), true pairs, regime); the true pairs are the largest excess over ``grid``."""
    kept = _count_at_or_above(s, grid)
    n_plain = float(np.max(kept - nulls.false_counts(grid, mutual="mean"), initial=0.0))
    weights = _false_weights(s, nulls)
    n_em = float(np.max(kept - nulls.false_counts(grid, weights, "mean"), initial=0.0))
    both = np.concatenate([grid, extra])
    if n_em <= RUNAWAY * max(n_plain, 1.0) and len(nulls.decoys) >= MIN_CANDIDATES:
        # common: true pairs form a component of their own, which the decoy mixture fits best
        false, n_true = _fit_decoy_mixture(s, nulls.decoys, both, np.random.default_rng(0))
        if n_true <= RUNAWAY * max(n_plain, 1.0):  # else the decoy mixture ran away too
            return false[: len(grid)], false[len(grid) :], n_true, "common", None
    # rare: the capped nulls, levelled on the bulk, where nearly every candidate is false
    weights = _tail_weights(s, nulls)
    false, heavy = (
        _null_level(s, nulls, tail) * nulls.false_counts(both, weights, "min", "capped", tail)
        for tail in ("normal", "exponential")
    )
    n_true = _true_pairs(grid, kept, kept - false[: len(grid)])
    false = np.maximum(false, _count_at_or_above(s, both) - n_true)
    n = len(grid)
    return false[:n], false[n:], n_true, "rare", heavy[:n]


def _true_pairs(grid: np.ndarray, kept: np.ndarray, excess: np.ndarray) -> float:
    """The true pairs among all candidates: N of the normal N Q((t - mu) / sd) that fits the
    ``excess`` (true pairs at or above each threshold of ``grid``) where it is at least
    :data:`TRUE_MAJORITY` of ``kept``, by least squares weighted by 1 / kept (its counting
    variance) over a grid of mu and sd, N in closed form; within [the largest such excess,
    :data:`TRUE_TAIL_CAP` times it]."""
    majority = (excess >= TRUE_MAJORITY * kept) & (kept >= MIN_KEPT)
    observed = float(np.max(excess[majority], initial=0.0))
    t, y, w = grid[majority], excess[majority], 1.0 / np.maximum(kept[majority], 1.0)
    if len(t) < _TRUE_FIT_MIN:
        return observed
    keep = np.unique(np.linspace(0, len(t) - 1, min(len(t), _TRUE_FIT_POINTS)).astype(int))
    t, y, w = t[keep], y[keep], w[keep]
    spread = max(float(t.std()), 1e-6)
    mus = np.linspace(t.min() - 3 * spread, t.max(), 80)
    sds = spread * np.geomspace(0.2, 5.0, 50)
    for _ in range(3):  # a coarse grid, then two finer ones around its best point
        q = normal_sf((t - mus[:, None, None]) / sds[None, :, None])
        n = (w * q * y).sum(axis=-1) / np.maximum((w * q * q).sum(axis=-1), 1e-300)
        n = np.clip(n, observed, TRUE_TAIL_CAP * observed)
        err = (w * (n[..., None] * q - y) ** 2).sum(axis=-1)
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        best, step, ratio = float(n[i, j]), mus[1] - mus[0], sds[1] / sds[0]
        mus = mus[i] + np.linspace(-step, step, 21)
        sds = sds[j] * ratio ** np.linspace(-1, 1, 21)
    return best


def _null_level(s: np.ndarray, nulls: CandidateNulls, tail: str) -> float:
    """The factor that makes the capped nulls count the candidates between the score quantiles
    :data:`LEVEL_BAND` (nearly all false when true pairs are rare): the nulls' shape comes from
    each row, their level from the job."""
    lo, hi = np.quantile(s, LEVEL_BAND)
    band = float(((s >= lo) & (s < hi)).sum())
    f = nulls.false_counts(np.array([lo, hi]), None, "min", "capped", tail)
    return band / max(float(f[0] - f[1]), 1e-9) if band else 1.0


def _tail_weights(s: np.ndarray, nulls: CandidateNulls) -> np.ndarray:
    """Chances of being false, from the top score down: in bins of equal count, expected nulls
    / candidates (unweighted), until the first bin that is mostly false (>= 90 %); below it 1.
    True pairs sit at the top, so their own nulls stop counting as false pairs there, while the
    bulk, where the null's shape is least exact, is left alone."""
    order = np.argsort(-s, kind="stable")
    size = max(25, len(s) // 400)
    w = np.ones(len(s))
    for a in range(0, len(s), size):
        rows = order[a : a + size]
        hi = np.nextafter(s[rows[0]], np.inf)
        f = nulls.false_counts(np.array([s[rows[-1]], hi]), None, "mean", "capped")
        p_false = float(np.clip((f[0] - f[1]) / len(rows), 0.0, 1.0))
        if p_false >= 0.9:
            break
        w[rows] = p_false
    return w


def _false_weights(s: np.ndarray, nulls: CandidateNulls) -> np.ndarray:
    """Each candidate's chance of being false: EM over score bins (expected nulls / candidates
    per bin, the nulls weighted by the previous round's chances)."""
    edges = np.quantile(s, np.linspace(0, 1, _WEIGHT_BINS + 1))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    bins = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, _WEIGHT_BINS - 1)
    per_bin = np.bincount(bins, minlength=_WEIGHT_BINS).astype(np.float64)
    w = np.ones(len(s))
    for _ in range(_WEIGHT_ROUNDS):
        f = nulls.false_counts(edges, w, "mean")
        w = np.clip((f[:-1] - f[1:]) / np.maximum(per_bin, 1.0), 0.0, 1.0)[bins]
    return w


def _count_at_or_above(values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    v = np.sort(values)
    return (len(v) - np.searchsorted(v, grid, side="left")).astype(np.float64)


def _histogram(s: np.ndarray, d: np.ndarray) -> dict:
    both = np.concatenate([s, d])
    if len(both) == 0:
        return {"edges": [], "candidates": [], "decoys": []}
    edges = np.histogram_bin_edges(both, bins=HISTOGRAM_BINS)
    return {
        "edges": [round(float(e), 5) for e in edges],
        "candidates": np.histogram(s, edges)[0].tolist(),
        "decoys": np.histogram(d, edges)[0].tolist(),
    }


def _sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= FIT_SAMPLE else rng.choice(x, FIT_SAMPLE, replace=False)


def _normal_pdf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    z = (x - mu) / sd
    return np.exp(-0.5 * z * z) / (sd * math.sqrt(2 * math.pi))


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _normal_sf(x: np.ndarray, mu: float, sd: float) -> np.ndarray:
    return 0.5 * _erfc((np.asarray(x) - mu) / (sd * math.sqrt(2)))


def _kde(points: np.ndarray):
    """A Gaussian kernel density of ``points`` (Silverman's bandwidth), binned for speed."""
    sd = max(float(points.std()), 1e-9)
    bw = 1.06 * sd * len(points) ** -0.2
    lo, hi = points.min() - 5 * bw, points.max() + 5 * bw
    edges = np.linspace(lo, hi, 1025)
    step = edges[1] - edges[0]
    counts, _ = np.histogram(points, edges)
    half = int(5 * bw / step) + 1
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) * step / bw) ** 2)
    density = np.convolve(counts, kernel / kernel.sum(), mode="same") / (len(points) * step)
    mids = (edges[:-1] + edges[1:]) / 2
    return lambda x: np.interp(x, mids, density, left=0.0, right=0.0)


def _true_component(x: np.ndarray, r: np.ndarray) -> tuple[float, float, float]:
    w = max(float(r.sum()), 1e-9)
    mu = float((r * x).sum() / w)
    sd = math.sqrt(float((r * (x - mu) ** 2).sum() / w)) + 1e-9
    return float(r.mean()), mu, sd


def _fit_decoy_mixture(s, d, grid, rng):
    """False pairs ~ decoys shifted by a fitted offset, true pairs ~ normal; EM."""
    x, xd = _sample(s, rng), _sample(d, rng)
    f_decoy = _kde(xd)
    offsets = _OFFSETS * max(float(xd.std()), 1e-9)
    offset, (w, mu, sd) = 0.0, (0.2, float(np.quantile(x, 0.9)), float(x.std()) / 2 + 1e-9)
    for _ in range(_EM_ROUNDS):
        p_true = w * _normal_pdf(x, mu, sd)
        p_false = (1 - w) * f_decoy(x - offset)
        r = p_true / np.maximum(p_true + p_false, 1e-300)
        w, mu, sd = _true_component(x, r)
        ll = [((1 - r) * np.log(np.maximum(f_decoy(x - o), 1e-300))).sum() for o in offsets]
        offset = float(offsets[int(np.argmax(ll))])
    survival = _count_at_or_above(d + offset, grid) / len(d)
    return (1 - w) * len(s) * survival, w * len(s)


def _fit_decoy_fdr(s, d, grid, rng):
    """False pairs = decoys at or above t, scaled by the candidates/decoys ratio below the decoy
    median (where true pairs are rare)."""
    median = float(np.median(d))
    scale = min((s < median).sum() / max((d < median).sum(), 1), len(s) / len(d))
    false = scale * _count_at_or_above(d, grid)
    return false, max(len(s) - scale * len(d), 1.0)


def _fit_mixture(s, d, grid, rng):
    """Two normal components on the candidate scores alone (EM); the upper one is true."""
    x = _sample(s, rng)
    w, mu1, sd1 = 0.2, float(np.quantile(x, 0.9)), float(x.std()) / 2 + 1e-9
    mu0, sd0 = float(np.median(x)), float(x.std()) + 1e-9
    for _ in range(200):
        p1 = w * _normal_pdf(x, mu1, sd1)
        p0 = (1 - w) * _normal_pdf(x, mu0, sd0)
        r = p1 / np.maximum(p0 + p1, 1e-300)
        w, mu1, sd1 = _true_component(x, r)
        _, mu0, sd0 = _true_component(x, 1 - r)
    if mu0 > mu1:
        w, mu0, sd0, mu1, sd1 = 1 - w, mu1, sd1, mu0, sd0
    return (1 - w) * len(s) * _normal_sf(grid, mu0, sd0), w * len(s)


_FITS = {  # the decoy methods; order-stats is _fit_order_stats
    "decoy-mixture": _fit_decoy_mixture,
    "decoy-fdr": _fit_decoy_fdr,
    "mixture": _fit_mixture,
}


def summary_fields(threshold: object, est: ThresholdEstimate | dict | None) -> dict:
    """The run summary's threshold keys: ``threshold`` (the number applied, None for every
    candidate) and ``threshold_auto`` (the estimate as a dict, when one was made)."""
    if est is None:
        return {"threshold": threshold, "threshold_auto": None}
    d = est.to_dict() if isinstance(est, ThresholdEstimate) else dict(est)
    return {"threshold": d.get("threshold"), "threshold_auto": d}
