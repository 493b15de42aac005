"""Which FAISS index to build, how to train it, where it runs, and how to pass search parameters.

Every index built here uses inner product on L2-normalised vectors (= cosine) and keeps 64-bit
labels: IVF kinds store labels natively, the others are wrapped in ``IndexIDMap2``.
"""

from __future__ import annotations

import logging
import math
import re

import faiss
import numpy as np

from stilts.errors import ErrorCode, StiltsError, shorten

LOG = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "hnsw", "ivfpq")
# ``auto`` thresholds, as in large mining pipelines (LASER, CCMatrix): exact search while the
# corpus is small, IVF-Flat up to ~10M vectors, OPQ+IVF+PQ beyond.
AUTO_EXACT_MAX = 100_000
AUTO_IVF_MAX = 10_000_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_NPROBE_MIN = 32
IVF_NPROBE_MAX = 256
MIN_POINTS_PER_CENTROID = 39
GPU_MAX_K = 2048  # FAISS GPU's largest k
# Compressed kinds (PQ/SQ codes) fetch REFINE_FACTOR * k candidates and re-rank them exactly.
REFINE_FACTOR = 10
# Training budget (2 cores, minutes): IVF k-means on at most IVF_TRAIN_PER_LIST points per list
# (>= 39, FAISS's minimum) for IVF_KMEANS_ITER iterations; each PQ sub-quantiser on
# 256 * PQ_TRAIN_PER_CENTROID points; OPQ's rotation on OPQ_TRAIN_MAX points for OPQ_ITER
# alternations. Measured by ``stilts bench speed --million`` (training seconds per kind).
TRAIN_MIN = 65_536
IVF_TRAIN_PER_LIST = 64
IVF_KMEANS_ITER = 10
PQ_KMEANS_ITER = 15
PQ_TRAIN_PER_CENTROID = 64
OPQ_ITER = 8
OPQ_TRAIN_MAX = 16_384
# What a factory string may look like before FAISS sees it: ``faiss.index_factory`` parses with
# std::regex and recursion, and a long string (15,000 characters) overflows its stack and kills
# the process; huge numbers allocate huge structures. So: short, factory characters only,
# shallow parentheses, numbers of at most 2**20 (IVF1048576 is a billion-scale list count).
MAX_KIND_CHARS = 128
MAX_KIND_NUMBER = 1 << 20
MAX_KIND_NESTING = 2
KIND_RE = re.compile(r"[A-Za-z0-9_,()+.=-]+")


def nlist_for(n: int) -> int:
    """IVF lists for ``n`` vectors: ~4*sqrt(N), at most N/39 so k-means has enough points."""
    return max(1, min(int(4 * math.sqrt(max(n, 1))), n // MIN_POINTS_PER_CENTROID))


def nprobe_for(nlist: int) -> int:
    """Default lists visited: nlist/8 within [32, 256]. Real sentence embeddings are not tightly
    clustered: on 16k dev-pack vectors (IVF412) recall@10 was 0.73 at nprobe 16, 0.93 at 64; the
    tuned default model's BUCC-style de-en mining (IVF142) lost 1.5 F1 points to exact search at
    nprobe 17, 0.6 at 32 and 0.15 at 64 (its base: 0.0, 0.0, 0.0; fr-en 1.0, 0.5, 0.3)."""
    return min(nlist, max(IVF_NPROBE_MIN, min(IVF_NPROBE_MAX, nlist // 8)))


def pq_m_for(dim: int) -> int:
    """PQ sub-quantisers: dim/8 bytes per vector (48 for 384-d), a divisor of dim."""
    for m in (dim // 8, dim // 4, dim // 2, 16, 8, 4, 2, 1):
        if m >= 1 and dim % m == 0:
            return m
    return 1


def _bad_kind(kind: str, why: str) -> StiltsError:
    shown = shorten(kind, 40)
    return StiltsError(
        ErrorCode.INVALID_ARGUMENT,
        f"kind {shown} {why}; use one of {', '.join(KINDS)} or a FAISS factory string "
        "such as 'IVF1024,Flat' or 'HNSW32,Flat'",
        "kind",
    )


def check_kind(kind: str) -> str:
    """Check a kind's length and grammar before any of it reaches FAISS (see ``KIND_RE``).

    Raises:
        StiltsError: INVALID_ARGUMENT naming ``kind``.
    """
    if not isinstance(kind, str) or not kind:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "kind must be a non-empty string", "kind")
    if len(kind) > MAX_KIND_CHARS:
        raise _bad_kind(kind, f"has {len(kind)} characters, more than {MAX_KIND_CHARS}")
    if not KIND_RE.fullmatch(kind):
        raise _bad_kind(
            kind, "has characters a factory string cannot hold (A-Z a-z 0-9 _ , ( ) + . = -)"
        )
    depth = 0
    for ch in kind:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0 or depth > MAX_KIND_NESTING:
            raise _bad_kind(
                kind, f"has unbalanced or more than {MAX_KIND_NESTING} nested parentheses"
            )
    if depth:
        raise _bad_kind(kind, "has unbalanced parentheses")
    for number in re.findall(r"\d+", kind):
        if int(number) > MAX_KIND_NUMBER:
            raise _bad_kind(kind, f"has the number {number[:12]}, above {MAX_KIND_NUMBER}")
    return kind


def resolve_kind(
    kind: str,
    n: int,
    dim: int,
    exact_max: int = AUTO_EXACT_MAX,
    ivf_max: int = AUTO_IVF_MAX,
) -> str:
    """Turn a kind (``auto``, ``flat``, ``ivf``, ``hnsw``, ``ivfpq`` or a factory string) into a
    FAISS factory string for ``n`` vectors of ``dim`` dimensions.

    ``exact_max`` and ``ivf_max`` are ``auto``'s tier thresholds: exact search up to ``exact_max``
    vectors, IVF-Flat up to ``ivf_max``, OPQ+IVF+PQ beyond.

    Raises:
        StiltsError: INVALID_ARGUMENT for an unknown kind or an invalid factory string.
    """
    check_kind(kind)
    k = kind.lower()
    if k == "auto":
        if n <= exact_max:
            return "Flat"
        if n <= ivf_max:
            return f"IVF{nlist_for(n)},Flat"
        return resolve_kind("ivfpq", n, dim)
    if k == "flat":
        return "Flat"
    if k == "ivf":
        return f"IVF{nlist_for(n)},Flat"
    if k == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if k == "ivfpq":
        m = pq_m_for(dim)
        nbits = 8 if n >= 256 * MIN_POINTS_PER_CENTROID else max(1, int(math.log2(max(n, 2) / 39)))
        nbits = min(8, max(1, nbits))
        return f"OPQ{m},IVF{nlist_for(n)},PQ{m}x{nbits}"
    if k in KINDS:  # pragma: no cover - all handled above
        raise AssertionError(k)
    try:
        faiss.index_factory(dim, kind, faiss.METRIC_INNER_PRODUCT)
    except Exception as e:  # faiss raises RuntimeError with a C++ trace: log it, do not show it
        LOG.debug("faiss.index_factory(%d, %r): %s", dim, kind, e)
        raise _bad_kind(kind, f"is not a FAISS factory string for {dim}-d vectors") from None
    return kind


def needs_training(factory: str) -> bool:
    """Whether the factory string describes an index that must be trained before adding."""
    return bool(re.search(r"IVF|PQ|OPQ|LSH|RQ|LSQ|SQ", factory, re.IGNORECASE))


def is_compressed(factory: str | None) -> bool:
    """Whether the factory stores lossy codes (PQ, SQ, ...), so its scores need re-ranking."""
    return bool(factory) and bool(re.search(r"PQ|SQ|LSH|RQ|LSQ", factory, re.IGNORECASE))


def tier(factory: str | None) -> int:
    """``auto``'s tier of a factory: 0 exact, 1 IVF-Flat, 2 compressed."""
    if not factory or not needs_training(factory):
        return 0
    return 2 if is_compressed(factory) else 1


def tune_training(index: faiss.Index) -> faiss.Index:
    """Set the training budget (sample sizes, iterations) of every trainable part of ``index``."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        for i in range(inner.chain.size()):
            vt = faiss.downcast_VectorTransform(inner.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = OPQ_ITER
                vt.niter_pq_0 = OPQ_ITER
                vt.max_train_points = OPQ_TRAIN_MAX
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.niter = IVF_KMEANS_ITER
        ivf.cp.max_points_per_centroid = IVF_TRAIN_PER_LIST
        inner_ivf = faiss.downcast_index(ivf)
        if hasattr(inner_ivf, "do_polysemous_training"):
            inner_ivf.do_polysemous_training = False  # minutes of annealing; unused by search
        pq = getattr(inner_ivf, "pq", None)
        if pq is not None:
            pq.cp.niter = PQ_KMEANS_ITER
            pq.cp.max_points_per_centroid = PQ_TRAIN_PER_CENTROID
    return index


def is_sized(kind: str) -> bool:
    """Whether the factory for this kind depends on the number of vectors (trained at build)."""
    return kind.lower() in ("auto", "ivf", "ivfpq")


def build(factory: str, dim: int) -> faiss.Index:
    """An empty CPU index for ``factory`` (inner product) that accepts 64-bit labels."""
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if ivf_of(index) is None:
        index = faiss.IndexIDMap2(index)
    hnsw = hnsw_of(index)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.nprobe = nprobe_for(ivf.nlist)
    return tune_training(index)


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF layer inside ``index`` (through pre-transforms and id maps), if any."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def hnsw_of(index: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW layer inside ``index``, if any."""
    inner = index
    while True:
        if isinstance(inner, faiss.IndexHNSW):
            return inner
        sub = getattr(inner, "index", None)
        if sub is None:
            return None
        inner = faiss.downcast_index(sub)


def supports_remove(index: faiss.Index) -> bool:
    """Whether ``remove_ids`` works (flat and IVF kinds); HNSW needs tombstones instead."""
    return hnsw_of(index) is None and (
        ivf_of(index) is not None or isinstance(_innermost(index), faiss.IndexFlat)
    )


def _innermost(index: faiss.Index) -> faiss.Index:
    inner = faiss.downcast_index(index)
    while getattr(inner, "index", None) is not None:
        inner = faiss.downcast_index(inner.index)
    return inner


def labels_of(index: faiss.Index) -> np.ndarray:
    """All labels stored in ``index`` (int64), for replaying the database over a snapshot."""
    ivf = ivf_of(index)
    if ivf is not None:
        invlists = ivf.invlists
        parts = [
            faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
            for i in range(ivf.nlist)
            if invlists.list_size(i)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    idmap = faiss.downcast_index(index)
    if hasattr(idmap, "id_map"):
        return faiss.vector_to_array(idmap.id_map).astype(np.int64)
    raise StiltsError(ErrorCode.INTERNAL, f"cannot list labels of {type(idmap).__name__}")


def search_params(
    index: faiss.Index,
    nprobe: int | None = None,
    ef_search: int | None = None,
    sel: faiss.IDSelector | None = None,
) -> faiss.SearchParameters | None:
    """Per-query parameters for ``index`` (thread-safe: the index itself is not modified)."""
    if nprobe is None and ef_search is None and sel is None:
        return None
    ivf = ivf_of(index)
    hnsw = hnsw_of(index)
    if ivf is not None:
        inner = faiss.SearchParametersIVF(nprobe=int(nprobe or ivf.nprobe))
    elif hnsw is not None:
        inner = faiss.SearchParametersHNSW(efSearch=int(ef_search or hnsw.hnsw.efSearch))
    else:
        inner = faiss.SearchParameters()
    if sel is not None:
        inner.sel = sel
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        return faiss.SearchParametersPreTransform(index_params=inner)
    return inner


def train_rows(n: int, factory: str, seed: int = 1234) -> np.ndarray:
    """Rows (sorted) of ``n`` to train on: ``IVF_TRAIN_PER_LIST`` points per IVF list, at least
    ``TRAIN_MIN`` (for OPQ/PQ)."""
    m = re.search(r"IVF(\d+)", factory)
    cap = max(IVF_TRAIN_PER_LIST * int(m.group(1)) if m else n, TRAIN_MIN)
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


# --- devices -------------------------------------------------------------------------------------


def gpu_count() -> int:
    """GPUs FAISS can use (0 for faiss-cpu)."""
    try:
        return int(faiss.get_num_gpus())
    except AttributeError:
        return 0


def gpu_capable(index: faiss.Index) -> bool:
    """FAISS GPU supports flat and IVF kinds; HNSW stays on the CPU."""
    return hnsw_of(index) is None


def to_device(index: faiss.Index, device: str, shard: bool = False) -> tuple[faiss.Index, str]:
    """Clone ``index`` to all GPUs when ``device`` is ``gpu``/``auto`` and GPUs exist.

    Args:
        index: a CPU index.
        device: ``auto``, ``cpu`` or ``gpu``.
        shard: split the vectors across GPUs instead of replicating them.

    Returns:
        (the index to search, ``"gpu"`` or ``"cpu"``).
    """
    if device == "cpu" or gpu_count() == 0 or not gpu_capable(index):
        if device == "gpu":
            LOG.warning("device=gpu requested but FAISS sees no GPU for this index; using CPU")
        return index, "cpu"
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    options.useFloat16 = False
    return faiss.index_cpu_to_all_gpus(index, co=options), "gpu"
