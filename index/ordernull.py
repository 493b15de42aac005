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
survival from x's row is ``exp(-max(t * den - anchor_x, 0) / beta_x)``. A pair found from one
side only (x's best but not y's) takes that side's null; a pair that is the best of both rows
takes the smaller of the two (``min``: the tail, where false pairs that reach a high score are
mutual) or their mean (``mean``: counts the bulk). The sum over candidates is the expected number
of false pairs at or above t, when every candidate is false; :mod:`stilts.index.autothreshold`
weights it by each candidate's chance of being false.

Unlike decoys made by leaving each sentence's best neighbour out (the second-best score), this
null has the tail of a *best* score, which is what competes for the threshold when true pairs
are rare.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

LOG = logging.getLogger(__name__)

# k-NN columns read for the null: ranks 2..NULL_COLUMNS give the spacings
NULL_COLUMNS = 10
# weight of the median beta against a row's own spacings (in spacings)
SHRINK = 8.0
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

    def __len__(self) -> int:
        return len(self.den)

    def cosine_needed(self, thresholds: np.ndarray, rows: slice) -> np.ndarray:
        """(rows, thresholds) cosines a pair needs to reach each margin threshold."""
        t = np.asarray(thresholds, dtype=np.float64)[None, :]
        den = self.den[rows, None]
        if self.margin == "ratio":
            return t * den
        if self.margin == "distance":
            return t + den
        return np.broadcast_to(t, (len(self.den[rows]), t.shape[1]))

    def false_counts(
        self, thresholds: np.ndarray, weights: np.ndarray | None = None, mutual: str = "min"
    ) -> np.ndarray:
        """Expected candidates at or above each threshold if each one is false with probability
        ``weights`` (default 1), summed over the candidates' nulls."""
        out = np.zeros(len(thresholds))
        for a in range(0, len(self), _CHUNK):
            rows = slice(a, a + _CHUNK)
            need = self.cosine_needed(thresholds, rows)
            s_src = _survival(need, self.anchor_src[rows], self.beta_src[rows])
            s_tgt = _survival(need, self.anchor_tgt[rows], self.beta_tgt[rows])
            both = np.minimum(s_src, s_tgt) if mutual == "min" else (s_src + s_tgt) / 2
            fs, ft = self.from_src[rows, None], self.from_tgt[rows, None]
            s = np.where(fs & ft, both, np.where(fs, s_src, s_tgt))
            w = 1.0 if weights is None else weights[rows, None]
            out += (w * s).sum(axis=0)
        return out


def _survival(need: np.ndarray, anchor: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return np.exp(-np.maximum(need - anchor[:, None], 0.0) / beta[:, None])


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
) -> CandidateNulls:
    """The nulls of the candidate pairs ``(rows_src[i], rows_tgt[i])``.

    Args:
        fwd_scores, fwd_ids: each source row's cosine k-NN (descending), up to
            :data:`NULL_COLUMNS` columns; bwd_*: the same for each target row.
        rows_src, rows_tgt: the candidates.
        den: each candidate's margin denominator.
        from_src, from_tgt: whether each candidate is its source's (target's) best.
        margin: the margin the scores are in.
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
    )
