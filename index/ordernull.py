"""The null of a mined pair from order statistics: how high would its score be if it were false?

A sentence without a translation in the other pool still gets a best match: the largest of N
cosines to sentences that do not translate it. Extreme-value theory says how the top of such a
sample behaves: above the second-largest value c2, the largest exceeds ``c2 + x`` with
probability ``exp(-x / beta)``, and the spacings of the top order statistics give ``beta``:
``i * (c_i - c_(i+1))`` has mean ``beta`` for every rank i (measured on both dev packs: 0.033 to
0.036 for ranks 1 to 9 of the cosine k-NN of untranslated sentences, flat in i). So every
sentence carries its own null, read from its k-NN row alone:

- ``anchor``: the best cosine of the row other than the mined partner;
- ``beta``: the mean of ``i * (c_i - c_(i+1))`` over ranks 2..K-1 of the row, shrunk towards the
  median of all rows (:data:`SHRINK` pseudo-spacings), so that a row's noise does not fatten its
  tail.

A candidate pair (x, y) with margin threshold t needs cosine ``t * den`` (ratio margin; ``t +
den`` for distance, ``t`` for absolute), with ``den`` its margin denominator, so its null
survival from x's row is ``S_x(t) = exp(-max(t * den - anchor_x, 0) / beta_x)``. The sum over
candidates is the expected number of false pairs at or above t when every candidate is false;
:mod:`stilts.index.autothreshold` weights it by each candidate's chance of being false. Two
forms (``false_counts(form=...)``):

- ``plain``: a pair found from one side only (x's best but not y's) takes that side's null; a
  pair that is the best of both rows the smaller of the two (``min``: the tail, where false
  pairs that reach a high score are mutual) or their mean (``mean``: counts the bulk).
- ``capped`` (the rare-pairs estimate): a pair found from x's side only scores below y's own
  best margin ``cap_y`` (else it would be y's best too), so its null is the chance of landing in
  [t, cap_y): ``S_x(t) - S_x(cap_y)``, zero from cap_y up. Without that cap the one-sided
  candidates' nulls were 13 to 36 times their false pairs in the tail. And the excess over the
  anchor has a normal tail, cut at ``gauss_z`` (the normal quantile of the best of
  sqrt(n_src * n_tgt) draws) with the same mean excess ``beta``: in the deep tail the
  exponential form counted several times the false pairs of the prose pools.

Unlike decoys made by leaving each sentence's best neighbour out (the second-best score), this
null has the tail of a *best* score, which is what competes for the threshold when true pairs
are rare.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

LOG = logging.getLogger(__name__)

# k-NN columns read for the null: ranks 2..NULL_COLUMNS give the spacings
NULL_COLUMNS = 10
# weight of the median beta against a row's own spacings (in spacings)
SHRINK = 8.0
FORMS = ("plain", "capped")
TAILS = ("normal", "exponential")  # the capped form's; the plain form's is exponential
_CHUNK = 2048


@dataclasses.dataclass
class CandidateNulls:
    """The null of every candidate pair, from both of its rows.

    Attributes:
        anchor_src, beta_src: the source row's best other cosine and tail scale.
        anchor_tgt, beta_tgt: the same for the target row.
        den: the pair's margin denominator ((r(x) + r(y)) / 2).
        from_src, from_tgt: whether the pair is its source's (target's) best by margin.
        margin: ``ratio``, ``distance`` or ``absolute``.
        decoys: the job's decoy scores (each sentence's nearest neighbour left out), which the
            common regime of :mod:`stilts.index.autothreshold` fits (empty: none).
        cap_src, cap_tgt: the source (target) row's best margin, which a pair found from the
            other side only stays below (``capped`` form).
        gauss_z: where the ``capped`` form's normal tail is cut (:func:`gauss_start`).
    """

    anchor_src: np.ndarray
    beta_src: np.ndarray
    anchor_tgt: np.ndarray
    beta_tgt: np.ndarray
    den: np.ndarray
    from_src: np.ndarray
    from_tgt: np.ndarray
    margin: str
    decoys: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    cap_src: np.ndarray | None = None
    cap_tgt: np.ndarray | None = None
    gauss_z: float = 3.0

    def __len__(self) -> int:
        return len(self.den)

    def cosine_needed(self, thresholds: np.ndarray, rows: slice) -> np.ndarray:
        """(rows, thresholds) cosines a pair needs to reach each margin threshold (thresholds of
        shape (T,), or (rows, T) for one per row)."""
        t = np.asarray(thresholds, dtype=np.float64)
        t = t[None, :] if t.ndim == 1 else t
        den = self.den[rows, None]
        if self.margin == "ratio":
            return t * den
        if self.margin == "distance":
            return t + den
        return np.broadcast_to(t, (len(self.den[rows]), t.shape[1]))

    def false_counts(
        self,
        thresholds: np.ndarray,
        weights: np.ndarray | None = None,
        mutual: str = "min",
        form: str = "plain",
        tail: str = "normal",
    ) -> np.ndarray:
        """Expected candidates at or above each threshold if each one is false with probability
        ``weights`` (default 1), summed over the candidates' nulls of ``form`` (:data:`FORMS`;
        the ``capped`` form's ``tail``: ``normal`` or ``exponential``)."""
        if form not in FORMS or tail not in TAILS:
            raise ValueError(f"form must be one of {FORMS} and tail one of {TAILS}")
        capped = form == "capped"
        if capped and (self.cap_src is None or self.cap_tgt is None):
            raise ValueError("the capped form needs each row's best margin (cap_src, cap_tgt)")
        survival = self._survival_fn(capped and tail == "normal")
        out = np.zeros(len(thresholds))
        for a in range(0, len(self), _CHUNK):
            rows = slice(a, a + _CHUNK)
            need = self.cosine_needed(thresholds, rows)
            src = self.anchor_src[rows], self.beta_src[rows]
            tgt = self.anchor_tgt[rows], self.beta_tgt[rows]
            s_src, s_tgt = survival(need, *src), survival(need, *tgt)
            both = np.minimum(s_src, s_tgt) if mutual == "min" else (s_src + s_tgt) / 2
            if capped:  # one-sided: below the other row's best margin
                s_src = self._below_cap(s_src, thresholds, rows, self.cap_tgt, survival, src)
                s_tgt = self._below_cap(s_tgt, thresholds, rows, self.cap_src, survival, tgt)
            fs, ft = self.from_src[rows, None], self.from_tgt[rows, None]
            s = np.where(fs & ft, both, np.where(fs, s_src, s_tgt))
            w = 1.0 if weights is None else weights[rows, None]
            out += (w * s).sum(axis=0)
        return out

    def _survival_fn(self, normal: bool):
        if not normal:
            return _survival
        z = self.gauss_z
        return lambda need, anchor, beta: _gauss_survival(need, anchor, beta, z)

    def _below_cap(self, s, thresholds, rows: slice, cap, survival, row) -> np.ndarray:
        """A one-sided pair's null ``s`` from its own ``row`` (anchor, beta), kept below
        ``cap``, the other row's best margin: the chance of landing in [t, cap) (used only where
        the pair is not mutual)."""
        cap = cap[rows, None]
        at_cap = survival(self.cosine_needed(cap, rows), *row)
        below = np.asarray(thresholds, dtype=np.float64)[None, :] < cap
        return np.where(below, np.maximum(s - at_cap, 0.0), 0.0)


def _survival(need: np.ndarray, anchor: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.exp(-np.maximum(need - anchor[:, None], 0.0) / beta[:, None])


def _normal_tail_ratio(u: np.ndarray) -> np.ndarray:
    """phi(u) / Q(u) for u >= 0 (Borjesson and Sundberg 1979: within 0.3 %)."""
    return 0.661 * u + 0.339 * np.sqrt(u * u + 5.51)


def normal_sf(u: np.ndarray) -> np.ndarray:
    """The standard normal's survival Q(u), elementwise, from :func:`_normal_tail_ratio` (within
    0.3 %)."""
    a = np.abs(u)
    tail = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi) / _normal_tail_ratio(a)
    return np.where(u >= 0, tail, 1.0 - tail)


def _gauss_survival(need: np.ndarray, anchor: np.ndarray, beta: np.ndarray, z: float):
    """P(excess > need - anchor) when the excess over the anchor is a standard normal's above
    ``z``, scaled to the mean excess ``beta``: Q(z + x) / Q(z) with x in units of sigma (the
    normal's mean excess above z is phi(z) / Q(z) - z, taken exactly: it is a small difference)."""
    q_z = 0.5 * math.erfc(z / math.sqrt(2))
    phi_z = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    sigma = beta / (phi_z / q_z - z)
    x = np.maximum(need - anchor[:, None], 0.0) / sigma[:, None]
    return np.exp(-0.5 * x * (2 * z + x)) * _normal_tail_ratio(z) / _normal_tail_ratio(z + x)


def gauss_start(n_src: int, n_tgt: int) -> float:
    """The normal quantile z with Q(z) = 2 / sqrt(n_src * n_tgt): where the best of a row of
    sqrt(n_src * n_tgt) draws sits (the capped form's tail starts there)."""
    p = min(2.0 / math.sqrt(max(n_src * n_tgt, 16)), 0.5)
    lo, hi = 0.0, 40.0
    for _ in range(80):  # bisection on the exact tail
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if 0.5 * math.erfc(mid / math.sqrt(2)) > p else (lo, mid)
    return (lo + hi) / 2


def _row_tails(scores: np.ndarray) -> np.ndarray:
    """Each row's tail scale at its top: the mean of its spacings ``i * (c_i - c_(i+1))`` over
    ranks 2..K-1, shrunk towards the median row, times the ratio by which the rows' mean
    spacing profile, extrapolated linearly to rank 1, differs from its mean over those ranks
    (1 where the tail is exponential, as on real text; below 1 for lighter, Gaussian tails)."""
    c = np.where(np.isfinite(scores), scores, np.nan).astype(np.float64)
    if c.shape[1] < 3:
        return np.full(len(c), np.nan)
    ranks = np.arange(2, c.shape[1])
    spacings = (c[:, ranks - 1] - c[:, ranks]) * ranks
    n = np.isfinite(spacings).sum(axis=1)
    own = np.nansum(spacings, axis=1)
    median = float(np.nanmedian(np.where(n > 0, own / np.maximum(n, 1), np.nan)))
    if not np.isfinite(median) or median <= 0:
        return np.full(len(c), 1e-3)
    profile = np.nanmean(spacings, axis=0)
    scale = 1.0
    if len(ranks) >= 3 and np.isfinite(profile).all():
        slope, level = np.polyfit(ranks, profile, 1)
        scale = float(np.clip((slope + level) / profile.mean(), 0.5, 1.0))
    return np.maximum(scale * (own + SHRINK * median) / (n + SHRINK), 1e-6)


def _anchors(scores: np.ndarray, ids: np.ndarray, rows: np.ndarray, partners: np.ndarray):
    c, i = scores[rows].astype(np.float64), ids[rows]
    other = np.where((i == partners[:, None]) | (i < 0) | ~np.isfinite(c), -np.inf, c)
    anchor = other.max(axis=1)
    # a row with no other neighbour: the null sits at its partner's cosine (no evidence)
    return np.where(np.isfinite(anchor), anchor, c.max(axis=1))


def candidate_nulls(
    fwd_scores: np.ndarray,
    fwd_ids: np.ndarray,
    bwd_scores: np.ndarray,
    bwd_ids: np.ndarray,
    rows_src: np.ndarray,
    rows_tgt: np.ndarray,
    *,
    den: np.ndarray,
    from_src: np.ndarray,
    from_tgt: np.ndarray,
    margin: str = "ratio",
    cap_src: np.ndarray | None = None,
    cap_tgt: np.ndarray | None = None,
) -> CandidateNulls:
    """The nulls of the candidate pairs ``(rows_src[i], rows_tgt[i])``.

    Args:
        fwd_scores, fwd_ids: each source row's cosine k-NN (descending), up to
            :data:`NULL_COLUMNS` columns; bwd_*: the same for each target row.
        rows_src, rows_tgt: the candidates.
        den: each candidate's margin denominator.
        from_src, from_tgt: whether each candidate is its source's (target's) best.
        margin: the margin the scores are in.
        cap_src, cap_tgt: each candidate's source (target) row's best margin (``capped`` form).
    """
    rs, rt = np.asarray(rows_src, dtype=np.int64), np.asarray(rows_tgt, dtype=np.int64)
    return CandidateNulls(
        _anchors(fwd_scores, fwd_ids, rs, rt),
        _row_tails(fwd_scores)[rs],
        _anchors(bwd_scores, bwd_ids, rt, rs),
        _row_tails(bwd_scores)[rt],
        np.asarray(den, dtype=np.float64),
        np.asarray(from_src, dtype=bool),
        np.asarray(from_tgt, dtype=bool),
        margin,
        cap_src=None if cap_src is None else np.asarray(cap_src, dtype=np.float64),
        cap_tgt=None if cap_tgt is None else np.asarray(cap_tgt, dtype=np.float64),
        gauss_z=gauss_start(len(fwd_scores), len(bwd_scores)),
    )
