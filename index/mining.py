"""Margin-based bitext mining (Artetxe & Schwenk, 2019) over blocked k-NN.

For source vectors x and target vectors y (L2-normalised):

- k-NN both ways: each x's k nearest y, each y's k nearest x (exact, in blocks, or through an
  approximate FAISS index);
- r(x) = mean cosine of x to its k nearest y, r(y) likewise;
- margin(x, y) = cos(x, y) / ((r(x) + r(y)) / 2) (``ratio``), cos - (r(x) + r(y)) / 2
  (``distance``) or plain cos (``absolute``);
- candidates: each x's best y (``forward``), each y's best x (``backward``), both pooled and taken
  greedily best-first with every sentence used once (``max``, as LASER and XTREME), or pairs that
  are each other's best (``intersect``).

Example:
    >>> pairs = mine(enc.encode(de, kind="bitext"), enc.encode(en, kind="bitext"), threshold=1.06)
    >>> [(p.score, de[p.src], en[p.tgt]) for p in pairs[:3]]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import faiss
import numpy as np

from stilts.errors import ErrorCode, StiltsError, shorten
from stilts.index import autothreshold, ordernull
from stilts.index import factory as fx
from stilts.index.ivfrecall import nprobe_for_recall
from stilts.index.knn import DEFAULT_BLOCK, DEFAULT_SHARD, empty_topk, knn, rerank, search_index
from stilts.index.listscan import search_by_list
from stilts.records import MinedPair

MARGINS = ("ratio", "distance", "absolute")
RETRIEVALS = ("max", "forward", "backward", "intersect")


@dataclasses.dataclass
class Neighbours:
    """k-NN of both directions: ``fwd_*`` (src -> tgt rows) and ``bwd_*`` (tgt -> src rows)."""

    fwd_scores: np.ndarray
    fwd_ids: np.ndarray
    bwd_scores: np.ndarray
    bwd_ids: np.ndarray

    @property
    def fwd_mean(self) -> np.ndarray:
        return _row_mean(self.fwd_scores)

    @property
    def bwd_mean(self) -> np.ndarray:
        return _row_mean(self.bwd_scores)


def _row_mean(scores: np.ndarray) -> np.ndarray:
    ok = np.isfinite(scores)
    total = np.where(ok, scores, 0).sum(axis=1, dtype=np.float64)
    return (total / np.maximum(ok.sum(axis=1), 1)).astype(np.float32)


def margin_fn(margin: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The margin function: (cosine, mean of the two k-NN means) -> score."""
    if margin == "ratio":
        return lambda a, b: a / np.maximum(b, 1e-6)
    if margin == "distance":
        return lambda a, b: a - b
    if margin == "absolute":
        return lambda a, b: a
    raise StiltsError(
        ErrorCode.INVALID_ARGUMENT,
        f"margin must be one of {MARGINS}, got {shorten(margin)}",
        "margin",
    )


def check_options(
    k: int,
    margin: str,
    retrieval: str,
    threshold: float | str | None,
    target_precision: float | None = None,
) -> None:
    """Validate mining options (shared by the library, the CLI and the server); ``threshold``
    may be ``"auto"`` (:mod:`stilts.index.autothreshold`).

    Raises:
        StiltsError: INVALID_ARGUMENT naming the option.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= 1024:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, f"k must be in 1..1024, got {k!r}", "k")
    margin_fn(margin)
    if retrieval not in RETRIEVALS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"retrieval must be one of {RETRIEVALS}, got {shorten(retrieval)}",
            "retrieval",
        )
    autothreshold.check(threshold, target_precision)
    if isinstance(threshold, bool) or (
        threshold is not None and not autothreshold.is_auto(threshold)
    ):
        if not isinstance(threshold, int | float | np.floating) or not np.isfinite(threshold):
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "threshold must be finite", "threshold")


def trained_index(database: np.ndarray, kind: str) -> tuple[faiss.Index, str]:
    """An empty FAISS index of ``kind`` for ``database``, trained on its sample (the rows of
    :func:`stilts.index.factory.train_rows`, FAISS's seeds): (index, factory string)."""
    factory = fx.resolve_kind(kind, len(database), database.shape[1])
    index = faiss.index_factory(database.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    fx.tune_training(index)
    if not index.is_trained:
        rows = fx.train_rows(len(database), factory)
        index.train(np.ascontiguousarray(database[rows], dtype=np.float32))
    return index, factory


def set_search(
    index: faiss.Index,
    k: int,
    nprobe: int | None,
    queries: np.ndarray | None = None,
    database: np.ndarray | None = None,
) -> None:
    """Search settings of a mining index: ``nprobe`` IVF lists, HNSW's efSearch for ``k``.

    Without ``nprobe``: :func:`stilts.index.factory.nprobe_for`, raised where the job's own
    ``queries`` against ``database`` need more lists for the recall target
    (:mod:`stilts.index.ivfrecall`; an IVF behind a pre-transform keeps the default).
    """
    ivf = fx.ivf_of(index)
    if ivf is not None:
        ivf.nprobe = min(ivf.nlist, nprobe or fx.nprobe_for(ivf.nlist))
        if (
            nprobe is None
            and queries is not None
            and isinstance(faiss.downcast_index(index), faiss.IndexIVF)
        ):
            ivf.nprobe = nprobe_for_recall(ivf, queries, database, k, floor=ivf.nprobe)[0]
    hnsw = fx.hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efSearch = max(fx.HNSW_EF_SEARCH, 2 * k)


def scans_by_list(index: faiss.Index) -> bool:
    """Whether mining searches ``index`` list by list (:func:`stilts.index.listscan.search_by_list`:
    IVF-Flat) rather than query by query."""
    return isinstance(faiss.downcast_index(index), faiss.IndexIVFFlat)


def refine_fetch(k: int, n: int) -> int:
    """Candidates per query that a compressed index fetches for re-ranking to ``k``."""
    return min(n, k * fx.REFINE_FACTOR)


def _approx_knn(
    queries: np.ndarray,
    database: np.ndarray,
    k: int,
    kind: str,
    block_size: int,
    nprobe: int | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    index, factory = trained_index(database, kind)
    for start in range(0, len(database), DEFAULT_SHARD):
        index.add(np.ascontiguousarray(database[start : start + DEFAULT_SHARD], dtype=np.float32))
    set_search(index, k, nprobe, queries, database)
    if fx.is_compressed(factory):
        fetch = refine_fetch(k, len(database))
        return rerank_rows(
            queries, lambda start, q: index.search(q, fetch)[1], database, k, block_size
        )
    if scans_by_list(index):
        return search_by_list(fx.ivf_of(index), queries, k, progress=progress)  # list by list
    return search_index(index, queries, k, block_size)


def rerank_rows(
    queries: np.ndarray,
    candidates: Callable[[int, np.ndarray], np.ndarray],
    database: np.ndarray,
    k: int,
    block_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` among each query's candidates, scored with the ``database`` rows.

    Args:
        queries: (nq, dim) query vectors.
        candidates: (start, query block) -> (len(block), c) candidate rows of that block (-1 =
            none), e.g. a compressed index's search.
        database: the rows the candidates point to (memory map welcome).
        k: results per query.
        block_size: queries per block.
    """

    def rows(ids: list[int]) -> np.ndarray:
        return np.asarray(database[np.asarray(ids, dtype=np.int64)], dtype=np.float32)

    best_d, best_i = empty_topk(len(queries), k)
    for start in range(0, len(queries), block_size):
        q = np.ascontiguousarray(queries[start : start + block_size], dtype=np.float32)
        d, i = rerank(q, candidates(start, q), rows, k)
        best_d[start : start + len(q)] = d
        best_i[start : start + len(q)] = i
    return best_d, best_i


def knn_kind(index: str, n_src: int, n_tgt: int) -> str:
    """The k-NN index for a job: ``auto`` is exact (``flat``) up to ``AUTO_EXACT_MAX`` sentences
    a side, else FAISS's choice for the size; any other kind is kept."""
    if index == "auto" and max(n_src, n_tgt) <= fx.AUTO_EXACT_MAX:
        return "flat"
    return index


def neighbours(
    src: np.ndarray,
    tgt: np.ndarray,
    k: int = 4,
    *,
    index: str = "flat",
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    nprobe: int | None = None,
) -> Neighbours:
    """k-NN in both directions (exact for ``index="flat"``, else through that FAISS kind).

    ``src`` and ``tgt`` may be memory maps; exact search reads them in blocks. ``nprobe``: IVF
    lists visited per query (default :func:`stilts.index.factory.nprobe_for`).
    """
    for name, arr in (("src", src), ("tgt", tgt)):
        if arr.ndim != 2 or len(arr) == 0:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"{name} must be a non-empty (n, dim) array", name
            )
    if src.shape[1] != tgt.shape[1]:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"src and tgt dimensions differ ({src.shape[1]} vs {tgt.shape[1]})",
            "tgt",
        )
    kind = knn_kind(index, len(src), len(tgt))
    if kind == "flat":
        fd, fi = knn(src, tgt, min(k, len(tgt)), block_size, shard_size, progress, "knn src->tgt")
        bd, bi = knn(tgt, src, min(k, len(src)), block_size, shard_size, progress, "knn tgt->src")
    else:
        fd, fi = _approx_knn(src, tgt, min(k, len(tgt)), kind, block_size, nprobe, progress)
        bd, bi = _approx_knn(tgt, src, min(k, len(src)), kind, block_size, nprobe, progress)
    return Neighbours(fd, fi, bd, bi)


def margins(nb: Neighbours, margin: str = "ratio") -> tuple[np.ndarray, np.ndarray]:
    """The margin of every k-NN entry, both directions (-inf where a row has no entry)."""
    fn = margin_fn(margin)
    fwd_mean, bwd_mean = nb.fwd_mean, nb.bwd_mean

    def scores(cos: np.ndarray, ids: np.ndarray, own: np.ndarray, other: np.ndarray):
        valid = ids >= 0
        denom = (own[:, None] + other[np.clip(ids, 0, None)]) / 2
        s = fn(cos.astype(np.float32), denom.astype(np.float32))
        return np.where(valid, s, -np.inf)

    return (
        scores(nb.fwd_scores, nb.fwd_ids, fwd_mean, bwd_mean),
        scores(nb.bwd_scores, nb.bwd_ids, bwd_mean, fwd_mean),
    )


def select(
    nb: Neighbours,
    *,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | None = None,
) -> list[MinedPair]:
    """Score the k-NN candidates by margin and pick pairs.

    Returns:
        Pairs sorted by score (best first; ties by src, then tgt), those with
        ``score >= threshold`` when a threshold is given.
    """
    check_options(1, margin, retrieval, threshold)
    if isinstance(threshold, str):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            "select takes a number; choose 'auto' with stilts.index.mining.select_auto",
            "threshold",
        )
    n, m = len(nb.fwd_ids), len(nb.bwd_ids)
    fwd, bwd = margins(nb, margin)
    fwd_arg = fwd.argmax(axis=1)
    bwd_arg = bwd.argmax(axis=1)
    fwd_best = nb.fwd_ids[np.arange(n), fwd_arg]
    bwd_best = nb.bwd_ids[np.arange(m), bwd_arg]
    fwd_score = fwd[np.arange(n), fwd_arg]
    bwd_score = bwd[np.arange(m), bwd_arg]

    if retrieval == "forward":
        src, tgt, sc = np.arange(n), fwd_best, fwd_score
    elif retrieval == "backward":
        src, tgt, sc = bwd_best, np.arange(m), bwd_score
    elif retrieval == "intersect":
        src = np.arange(n)
        keep = bwd_best[np.clip(fwd_best, 0, None)] == src
        src, tgt, sc = src[keep], fwd_best[keep], fwd_score[keep]
    else:  # max: best-first over both directions, each sentence used at most once
        src = np.concatenate([np.arange(n), bwd_best])
        tgt = np.concatenate([fwd_best, np.arange(m)])
        sc = np.concatenate([fwd_score, bwd_score])
        order = np.lexsort((tgt, src, -sc))
        seen_s = np.zeros(n, dtype=bool)
        seen_t = np.zeros(m, dtype=bool)
        keep = []
        for i in order:
            s, t = src[i], tgt[i]
            if s < 0 or t < 0 or seen_s[s] or seen_t[t]:
                continue
            seen_s[s] = seen_t[t] = True
            keep.append(i)
        keep = np.asarray(keep, dtype=np.int64)
        src, tgt, sc = src[keep], tgt[keep], sc[keep]
    ok = (src >= 0) & (tgt >= 0) & np.isfinite(sc)
    if threshold is not None:
        ok &= sc >= threshold
    src, tgt, sc = src[ok], tgt[ok], sc[ok]
    order = np.lexsort((tgt, src, -sc))
    return [MinedPair(float(sc[i]), int(src[i]), int(tgt[i])) for i in order]


def mine(
    src: np.ndarray,
    tgt: np.ndarray,
    *,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    index: str = "flat",
    block_size: int = DEFAULT_BLOCK,
    shard_size: int = DEFAULT_SHARD,
    progress: bool = False,
    target_precision: float | None = None,
) -> list[MinedPair]:
    """Mine translation pairs between two sets of sentence vectors.

    Args:
        src: (n, dim) L2-normalised vectors (a ``np.memmap`` is read in blocks).
        tgt: (m, dim) vectors of the other language.
        k: neighbours for the margin (4 as in the paper).
        margin: ``ratio`` (default), ``distance`` or ``absolute`` (plain cosine).
        retrieval: ``max`` (default), ``forward``, ``backward`` or ``intersect``.
        threshold: keep pairs scoring at least this, or ``"auto"``: chosen from the job's own
            scores (:mod:`stilts.index.autothreshold`; the margin's scale belongs to the encoder,
            so a fixed number from another model or domain can be far off).
        index: ``flat`` (exact, blocked), ``auto``, or an approximate kind (``ivf``, ``hnsw``,
            ``ivfpq`` or a FAISS factory string).
        block_size: query rows per tile.
        shard_size: database rows per tile.
        progress: tqdm bars for the k-NN.
        target_precision: with ``threshold="auto"``: the lowest threshold whose estimated
            precision reaches this, instead of the best expected F1.

    Returns:
        :class:`MinedPair` list, best first.
    """
    return mine_with_estimate(
        src,
        tgt,
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
        index=index,
        block_size=block_size,
        shard_size=shard_size,
        progress=progress,
    )[0]


def mine_with_estimate(
    src: np.ndarray,
    tgt: np.ndarray,
    *,
    k: int = 4,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    **knn_options,
):
    """:func:`mine`, also returning the threshold estimate (None unless the threshold is
    ``"auto"`` or a ``target_precision`` is given); ``knn_options`` go to :func:`neighbours`.

    Returns:
        (pairs best first, :class:`stilts.index.autothreshold.ThresholdEstimate` or None).
    """
    check_options(k, margin, retrieval, threshold, target_precision)
    needed = neighbours_needed(k, threshold, target_precision)
    return select_auto(
        neighbours(src, tgt, needed, **knn_options),
        k=k,
        margin=margin,
        retrieval=retrieval,
        threshold=threshold,
        target_precision=target_precision,
    )


# --- the threshold chosen from the job's own scores (stilts.index.autothreshold) ---------------


def neighbours_needed(k: int, threshold: object, target_precision: float | None = None) -> int:
    """k-NN columns a job needs: ``k``, or for ``auto`` also the decoys' column and the
    order-statistics null's (:data:`stilts.index.ordernull.NULL_COLUMNS`)."""
    if autothreshold.is_auto(threshold) or target_precision is not None:
        return max(k + 1, ordernull.NULL_COLUMNS)
    return k


def columns(nb: Neighbours, a: int, b: int) -> Neighbours:
    """Columns ``a..b-1`` of both directions."""
    return Neighbours(
        nb.fwd_scores[:, a:b], nb.fwd_ids[:, a:b], nb.bwd_scores[:, a:b], nb.bwd_ids[:, a:b]
    )


def estimate_candidates(
    nb: Neighbours,
    *,
    k: int,
    margin: str = "ratio",
    retrieval: str = "max",
    target_precision: float | None = None,
    method: str = autothreshold.DEFAULT_METHOD,
) -> tuple[list[MinedPair], autothreshold.ThresholdEstimate]:
    """Every candidate (no threshold) and the threshold estimate of ``method``.

    Args:
        nb: k-NN of both directions with :func:`neighbours_needed` columns (the margin uses the
            first ``k``; ``order-stats`` reads up to :data:`~stilts.index.ordernull.NULL_COLUMNS`,
            the decoy methods columns 2..k+1).
    """
    pairs = select(columns(nb, 0, k), margin=margin, retrieval=retrieval)
    scores = np.fromiter((p.score for p in pairs), dtype=np.float64, count=len(pairs))
    decoys = np.zeros(0)
    if nb.fwd_scores.shape[1] > 1 and nb.bwd_scores.shape[1] > 1:  # else no second neighbour
        picked = select(columns(nb, 1, k + 1), margin=margin, retrieval=retrieval)
        decoys = np.fromiter((p.score for p in picked), dtype=np.float64, count=len(picked))
    null = decoys
    if method == "order-stats":
        rows_s = np.fromiter((p.src for p in pairs), dtype=np.int64, count=len(pairs))
        rows_t = np.fromiter((p.tgt for p in pairs), dtype=np.int64, count=len(pairs))
        null = _nulls(nb, rows_s, rows_t, k, margin, retrieval)
        null.decoys = decoys
    est = autothreshold.estimate(scores, null, target_precision=target_precision, method=method)
    return pairs, est


def select_auto(
    nb: Neighbours,
    *,
    k: int,
    margin: str = "ratio",
    retrieval: str = "max",
    threshold: float | str | None = None,
    target_precision: float | None = None,
    method: str = autothreshold.DEFAULT_METHOD,
) -> tuple[list[MinedPair], autothreshold.ThresholdEstimate | None]:
    """:func:`select` that also takes ``threshold="auto"`` (or ``target_precision``).

    Args:
        nb: k-NN of both directions with :func:`neighbours_needed` columns.
        k: neighbours for the margin.
        margin, retrieval: as :func:`select`.
        threshold: a number, None (every candidate) or ``"auto"``.
        target_precision: with ``auto``: the lowest threshold whose estimated precision is at
            least this, instead of the best expected F1.
        method: the estimator (:data:`stilts.index.autothreshold.METHODS`).

    Returns:
        (pairs best first, the estimate; None unless the threshold was chosen here).
    """
    autothreshold.check(threshold, target_precision)
    if not (autothreshold.is_auto(threshold) or target_precision is not None):
        return select(
            columns(nb, 0, k), margin=margin, retrieval=retrieval, threshold=threshold
        ), None
    pairs, est = estimate_candidates(
        nb,
        k=k,
        margin=margin,
        retrieval=retrieval,
        target_precision=target_precision,
        method=method,
    )
    autothreshold.LOG.info("%s", est.summary())
    if est.threshold is not None:
        pairs = [p for p in pairs if p.score >= est.threshold]
    return pairs, est


def _nulls(nb, rows_s, rows_t, k, margin, retrieval) -> ordernull.CandidateNulls:
    """The order-statistics nulls of candidates ``(rows_s[i], rows_t[i])``: the margin's
    denominators and which rows each candidate is the best of come from the first ``k`` columns
    (as the miner scored them), the nulls from all columns."""
    head = columns(nb, 0, k)
    fwd, bwd = margins(head, margin)
    fwd_best = head.fwd_ids[np.arange(len(fwd)), fwd.argmax(axis=1)]
    bwd_best = head.bwd_ids[np.arange(len(bwd)), bwd.argmax(axis=1)]
    from_src, from_tgt = fwd_best[rows_s] == rows_t, bwd_best[rows_t] == rows_s
    if retrieval == "forward":
        from_src, from_tgt = np.ones_like(from_src), np.zeros_like(from_tgt)
    elif retrieval == "backward":
        from_src, from_tgt = np.zeros_like(from_src), np.ones_like(from_tgt)
    elif retrieval == "intersect":
        from_src = from_tgt = np.ones_like(from_src)
    else:  # a greedy pick is the best of at least one of its rows
        from_src = from_src | ~from_tgt
    den = (head.fwd_mean.astype(np.float64)[rows_s] + head.bwd_mean.astype(np.float64)[rows_t]) / 2
    return ordernull.candidate_nulls(
        nb.fwd_scores, nb.fwd_ids, nb.bwd_scores, nb.bwd_ids, rows_s, rows_t,
        den=den, from_src=from_src, from_tgt=from_tgt, margin=margin,
        cap_src=fwd.max(axis=1)[rows_s], cap_tgt=bwd.max(axis=1)[rows_t],
    )  # fmt: skip
