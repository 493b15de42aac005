"""The mining threshold chosen from the job's own scores (``stilts mine --threshold auto``).

The miner's candidates (:func:`stilts.index.mining.select`) mix true pairs with false ones: the
best match of a sentence whose translation is not in the other pool. Nothing labels them, but the
job can make its own **decoys**: the same selection once more with every sentence's nearest
neighbour left out (k-NN columns 2..k+1 instead of 1..k, both directions), so that a sentence
whose translation was its nearest neighbour is now scored against sentences that are not its
translation. The decoy scores follow the law of false candidates closely in shape, though not in
place (they mix first-best scores of translated sentences with second-best scores of the others).

``decoy-mixture`` (the default) fits the candidate scores as a two-component mixture by EM: false
pairs follow the decoy distribution shifted by a fitted offset (a kernel density of the decoys),
true pairs a normal distribution. From the fit, for every threshold t:

- expected false pairs at or above t: F(t) = (1 - w) * N * P(decoy + offset >= t);
- expected true pairs: T(t) = R(t) - F(t), with R(t) the candidates at or above t;
- precision T/R, recall T / (w * N), expected F1 = 2T / (R + w * N).

The threshold is the best expected F1, or with ``target_precision`` the lowest threshold whose
estimated precision reaches it (among thresholds keeping at least :data:`MIN_KEPT` pairs). Two simpler estimators are kept for comparison (``stilts bench
threshold``): ``decoy-fdr`` (false pairs = decoy counts scaled by the share of decoys below the
decoy median, as in target-decoy FDR) and ``mixture`` (two normal components, no decoys).

The estimate is only as good as its two assumptions: enough true pairs to form a component (a few
percent of the candidates), and decoys shaped like the false pairs; see the README.

Example:
    >>> nb = mining.neighbours(src, tgt, k + 1)
    >>> pairs, est = select(nb, k=4, threshold="auto")
    >>> est.threshold, est.precision
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.index import mining
from stilts.records import MinedPair

LOG = logging.getLogger(__name__)

AUTO = "auto"
METHODS = ("decoy-mixture", "decoy-fdr", "mixture")
DEFAULT_METHOD = "decoy-mixture"
# fewer candidates (or decoys) than this: no estimate, every candidate is kept (documented)
MIN_CANDIDATES = 100
# a threshold must keep at least this many candidates (a precision of 1 pair is noise)
MIN_KEPT = 10
# the EM fits on at most this many scores (a seeded sample); counts always use every score
FIT_SAMPLE = 50_000
HISTOGRAM_BINS = 40
_EM_ROUNDS = 40
_OFFSETS = np.linspace(-1.0, 1.0, 81)  # in units of the decoys' standard deviation


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
        reason: why no estimate was made (``method == "none"``).
        histogram: ``edges`` and per-bin counts of the ``candidates`` and the ``decoys``.
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

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("threshold", "precision", "recall", "f1", "true_pairs"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 6)
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
        return (
            f"threshold auto ({self.method}): {self.threshold:.4f}, estimated precision "
            f"{self.precision:.3f}, recall {self.recall:.3f} ({self.kept} of {self.candidates} "
            f"candidates kept, ~{self.true_pairs:.0f} true){target}"
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


def neighbours_needed(k: int, threshold: object, target_precision: float | None = None) -> int:
    """k-NN columns a job needs: one more than ``k`` for the decoys of ``auto``."""
    return k + 1 if is_auto(threshold) or target_precision is not None else k


def leave_best_out(nb: mining.Neighbours, k: int) -> tuple[mining.Neighbours, mining.Neighbours]:
    """Split k-NN with up to ``k + 1`` columns into the job's (columns 1..k) and the decoys'
    (columns 2..k+1: every sentence's nearest neighbour left out)."""

    def cols(a: int, b: int) -> mining.Neighbours:
        return mining.Neighbours(
            nb.fwd_scores[:, a:b], nb.fwd_ids[:, a:b], nb.bwd_scores[:, a:b], nb.bwd_ids[:, a:b]
        )

    return cols(0, k), cols(1, k + 1)


def select(
    nb: mining.Neighbours,
    *,
    k: int,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    method: str = DEFAULT_METHOD,
) -> tuple[list[MinedPair], ThresholdEstimate | None]:
    """:func:`stilts.index.mining.select` with ``threshold="auto"`` (or ``target_precision``).

    Args:
        nb: k-NN of both directions with :func:`neighbours_needed` columns.
        k: neighbours for the margin.
        margin, retrieval: as :func:`stilts.index.mining.select`.
        threshold: a number, None (every candidate) or ``"auto"``.
        target_precision: with ``auto``: the lowest threshold whose estimated precision is at
            least this, instead of the best expected F1.
        method: the estimator (:data:`METHODS`).

    Returns:
        (pairs best first, the estimate; None unless the threshold was chosen here).
    """
    check(threshold, target_precision)
    real, decoy = leave_best_out(nb, k)
    if not (is_auto(threshold) or target_precision is not None):
        return mining.select(real, margin=margin, retrieval=retrieval, threshold=threshold), None
    pairs = mining.select(real, margin=margin, retrieval=retrieval)
    # a side of one sentence leaves no second neighbour: no decoys (the estimate falls back)
    has_decoys = decoy.fwd_scores.shape[1] > 0 and decoy.bwd_scores.shape[1] > 0
    decoys = (
        _scores(mining.select(decoy, margin=margin, retrieval=retrieval))
        if has_decoys
        else np.zeros(0)
    )
    est = estimate(_scores(pairs), decoys, target_precision=target_precision, method=method)
    LOG.info("%s", est.summary())
    if est.threshold is not None:
        pairs = [p for p in pairs if p.score >= est.threshold]
    return pairs, est


def _scores(pairs: list[MinedPair]) -> np.ndarray:
    return np.fromiter((p.score for p in pairs), dtype=np.float64, count=len(pairs))


def estimate(
    scores: np.ndarray,
    decoys: np.ndarray,
    *,
    target_precision: float | None = None,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> ThresholdEstimate:
    """Choose a threshold for candidate ``scores`` with the help of ``decoys``' scores.

    Returns:
        The estimate; ``method="none"`` with every candidate kept when there are fewer than
        :data:`MIN_CANDIDATES` candidates or decoys to fit.

    Raises:
        StiltsError: INVALID_ARGUMENT for an unknown method or target precision.
    """
    if method not in METHODS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"method must be one of {METHODS}, got {method!r}", "method"
        )
    check(AUTO, target_precision)
    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(decoys, dtype=np.float64)
    s, d = s[np.isfinite(s)], d[np.isfinite(d)]
    hist = _histogram(s, d)
    if len(s) < MIN_CANDIDATES or (method != "mixture" and len(d) < MIN_CANDIDATES):
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
            f"{len(s)} candidates and {len(d)} decoys; at least {MIN_CANDIDATES} of each are "
            "needed to estimate",
            hist,
        )
    grid = np.unique(s)  # candidate thresholds, ascending
    kept = _count_at_or_above(s, grid)
    false, n_true = _FITS[method](s, d, grid, np.random.default_rng(seed))
    true = np.maximum(kept - false, 0.0)
    precision = np.where(kept > 0, true / np.maximum(kept, 1), 1.0)
    recall = true / max(n_true, 1e-9)
    f1 = 2 * true / np.maximum(kept + n_true, 1e-9)
    met = None
    usable = kept >= min(MIN_KEPT, len(s))
    if target_precision is None:
        i = int(np.argmax(np.where(usable, f1, -1.0)))
    else:
        ok = np.flatnonzero(usable & (precision >= target_precision - 1e-12))
        met = bool(len(ok))
        i = int(ok[0]) if met else int(np.argmax(np.where(usable, precision, -1.0)))
        if not met:
            LOG.warning(
                "no threshold reaches the estimated precision %.3f; using the most precise one "
                "(%.3f at %.4f)",
                target_precision,
                precision[i],
                grid[i],
            )
    return ThresholdEstimate(
        method,
        float(grid[i]),
        float(precision[i]),
        float(min(recall[i], 1.0)),
        float(f1[i]),
        float(n_true),
        len(s),
        int(kept[i]),
        target_precision,
        met,
        None,
        hist,
    )


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


_FITS = {
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
