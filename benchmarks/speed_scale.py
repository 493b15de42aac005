"""Search and mining at scale (``stilts bench speed --sections scale --million``).

Vectors come from :mod:`stilts.benchmarks.scale_vectors` (encoded dev-pack pairs, blended and
displaced; never isotropic noise). Every measured step runs in its own child process so that its
peak RSS (``wait4`` rusage) is its own:

- search, per kind: build a :class:`~stilts.index.VectorIndex` on disk (add in blocks, train,
  save): build and training seconds, peak RSS, size on disk; then serve it (``open``, with the IVF
  lists memory-mapped for ``mmap`` modes): RSS after the timed queries, p50/p99 latency of single
  queries, batched QPS, recall@k against exact search;
- mining: ``stilts mine SRC.npy TGT.npy --index K`` as a subprocess: wall time and peak RSS; the
  mined pairs are scored against the ground truth (synthetic pair t = row t of both files) and,
  on a sample, against exact k-NN.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stilts.benchmarks.timing import percentiles
from stilts.fsutil import atomic_path

LOG = logging.getLogger(__name__)

SEARCH_KINDS = ("flat", "ivf", "ivfpq")
MINE_KINDS = ("ivf", "ivfpq")
ADD_BLOCK = 50_000
TRAIN_BUFFER = 262_144


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rss_bytes() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def _child(args: list[str], log: Path) -> tuple[dict, float, int]:
    """Run ``python -m stilts.benchmarks.speed_scale ARGS``: (its JSON, seconds, peak RSS)."""
    t0 = time.perf_counter()
    with open(log, "ab") as lf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stilts.benchmarks.speed_scale", *args],
            stdout=subprocess.PIPE,
            stderr=lf,
        )
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {args[0]} failed (see {log})")
    return json.loads(out.decode().strip().splitlines()[-1]), seconds, usage.ru_maxrss * 1024


def child_build(kind: str, vectors: str, skip: int, path: str) -> dict:
    """Build a VectorIndex of ``kind`` on rows ``skip:`` of ``vectors`` at ``path``."""
    from stilts.index import VectorIndex
    from stilts.index import factory as fx

    x = np.load(vectors, mmap_mode="r")
    n = len(x) - skip
    t0 = time.perf_counter()
    # the factory for all n vectors (nlist for n), trained once TRAIN_BUFFER vectors were added
    factory = fx.resolve_kind(kind, n, x.shape[1])
    idx = VectorIndex.create(
        path,
        x.shape[1],
        factory,
        device="cpu",
        train_size=min(n, TRAIN_BUFFER) if kind != "flat" else None,
    )
    for start in range(skip, len(x), ADD_BLOCK):
        block = np.asarray(x[start : start + ADD_BLOCK])
        idx.add(np.arange(start - skip, start - skip + len(block), dtype=np.int64), block)
    t_added = time.perf_counter()
    idx.save()
    d = idx.describe()
    idx.close()
    return {
        "build_seconds": time.perf_counter() - t0,
        "add_and_train_seconds": t_added - t0,
        "factory": d["factory"],
        "params": d["params"],
        "training": d["last_build"],
    }


def child_serve(path: str, queries: str, exact: str, k: int, mmap: bool, batch: int) -> dict:
    """Open the index and time ``queries``: latency, QPS, recall@k vs ``exact`` ids, RSS."""
    from stilts.index import VectorIndex

    q = np.load(queries)
    want = np.load(exact)
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    idx = VectorIndex.open(path, device="cpu", mmap=mmap)
    open_s = time.perf_counter() - t0
    rss_open = _rss_bytes()
    idx.search(q[:20], k)  # warm-up
    lat = []
    found = []
    for i in range(len(q)):
        t = time.perf_counter()
        hits = idx.search(q[i : i + 1], k)
        lat.append(time.perf_counter() - t)
        found.append([h.id for h in hits[0]])
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for start in range(0, len(q), batch):
            idx.search(q[start : start + batch], k)
        runs.append(len(q) / (time.perf_counter() - t))
    recall = float(
        np.mean([len(set(f) & set(w.tolist())) / k for f, w in zip(found, want, strict=True)])
    )
    d = idx.describe()
    rss_end = _rss_bytes()
    idx.close()
    return {
        "storage": d["storage"],
        "factory": d["factory"],
        "params": d["params"],
        "open_seconds": open_s,
        "latency_ms": {key: v * 1000 for key, v in percentiles(lat).items()},
        "qps_batch": statistics.median(runs),
        f"recall_at_{k}": recall,
        "rss_before_open": rss_before,
        "rss_after_open": rss_open,
        "rss_after_queries": rss_end,
    }


def _gold_and_exact(out_tsv: Path, src: np.ndarray, tgt: np.ndarray, sample: int, k: int) -> dict:
    """Mined pairs vs the ground truth (row t = row t) and, on a sample, vs exact k-NN."""
    from stilts.index.knn import knn

    pairs = np.loadtxt(out_tsv, dtype=np.float64, ndmin=2)
    s_rows, t_rows = pairs[:, 1].astype(np.int64), pairs[:, 2].astype(np.int64)
    correct = int(np.sum(s_rows == t_rows))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(s_rows), min(sample, len(s_rows)), replace=False)
    q = np.ascontiguousarray(src[s_rows[pick]], dtype=np.float32)
    _, nn = knn(q, tgt, k)
    in_knn = np.mean([t_rows[p] in set(row.tolist()) for p, row in zip(pick, nn, strict=True)])
    top1 = np.mean(t_rows[pick] == nn[:, 0])
    return {
        "pairs": len(s_rows),
        "correct_pairs": correct,
        "precision_vs_truth": correct / max(len(s_rows), 1),
        "recall_vs_truth": correct / len(src),
        "sample": len(pick),
        f"mined_target_in_exact_top{k}": float(in_knn),
        "mined_target_is_exact_top1": float(top1),
    }


def run(
    n: int,
    workdir: str | Path,
    tatoeba: str | Path,
    kinds: tuple[str, ...] = SEARCH_KINDS,
    mine_kinds: tuple[str, ...] = MINE_KINDS,
    n_queries: int = 500,
    k: int = 10,
    batch: int = 64,
    mine_n: int | None = None,
    mine_nprobe: int | None = 32,
    model: str = "default",
    per_language: int | None = None,
) -> dict:
    """The scale benchmark at ``n`` vectors (and ``mine_n`` x ``mine_n`` for mining).

    Args:
        n: indexed vectors.
        workdir: where vectors, indices and logs go (large: ~3 x n x dim x 4 bytes + indices).
        tatoeba: the dev pack's Tatoeba directory (encoded once, cached in ``workdir``).
        kinds: search kinds; mine_kinds: ``stilts mine --index`` kinds (empty: no mining).
        n_queries, k, batch: timed queries, neighbours, batch size for QPS.
        mine_n: sentences per side for mining (default ``n``).
        mine_nprobe: ``--nprobe`` for mining (None: the default nprobe).
        model: the encoder for the real pairs.
        per_language: real Tatoeba pairs encoded per language (default
            :data:`~stilts.benchmarks.scale_vectors.DEFAULT_PER_LANGUAGE`).
    """
    from stilts.benchmarks import scale_vectors as sv
    from stilts.index.knn import knn

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    log = work / "children.log"
    xx, en = sv.encode_pairs(
        tatoeba,
        work / "pairs.npz",
        model=model,
        per_language=per_language or sv.DEFAULT_PER_LANGUAGE,
        progress=False,
    )
    out: dict = {
        "n": n,
        "vectors": {
            "real_pairs": len(xx),
            "method": "blends of two real pairs (shared weight) + a real translation "
            "displacement per side, renormalised (stilts.benchmarks.scale_vectors)",
            "real": sv.stats(xx, en),
        },
        "dim": int(xx.shape[1]),
        "queries": n_queries,
        "k": k,
        "search": {},
        "mining": {},
    }
    vec_path = work / f"search-{n}.npy"
    if not vec_path.is_file():
        with atomic_path(vec_path) as tmp:
            mm = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=(n + n_queries, xx.shape[1])
            )
            sv.derive(xx, en, n + n_queries, seed=1, sides=("en",), out={"en": mm})
            mm.flush()
            del mm
    x = np.load(vec_path, mmap_mode="r")
    q = np.ascontiguousarray(x[:n_queries])
    np.save(work / "queries.npy", q)
    t0 = time.perf_counter()
    _, exact = knn(q, x[n_queries:], k)
    out["exact_knn_seconds"] = time.perf_counter() - t0
    np.save(work / "exact.npy", exact)
    sample = sv.derive(xx, en, 20_000, seed=3)
    out["vectors"]["derived"] = sv.stats(sample["xx"], sample["en"])
    out["raw_vector_bytes"] = n * x.shape[1] * 4
    for kind in kinds:
        LOG.info("scale: building %s on %d vectors", kind, n)
        path = work / f"index-{kind}-{n}"
        if path.exists():
            import shutil

            shutil.rmtree(path)
        built, _, peak = _child(["build", kind, str(vec_path), str(n_queries), str(path)], log)
        r = {**built, "build_peak_rss": peak, "disk_bytes": _dir_bytes(path)}
        modes = ["memory", "mmap"] if kind != "flat" else ["memory"]
        for mode in modes:
            LOG.info("scale: serving %s (%s)", kind, mode)
            served, _, peak = _child(
                [
                    "serve",
                    str(path),
                    str(work / "queries.npy"),
                    str(work / "exact.npy"),
                    str(k),
                    mode,
                    str(batch),
                ],
                log,
            )
            r[mode] = {**served, "peak_rss": peak}
        out["search"][kind] = r
        _save_partial(work, out)
    if mine_kinds:
        m = mine_n or n
        src_p, tgt_p = work / f"mine-src-{m}.npy", work / f"mine-tgt-{m}.npy"
        if not tgt_p.is_file():
            # tgt is renamed last: its presence means both files are complete
            with atomic_path(tgt_p) as tmp_en, atomic_path(src_p) as tmp_xx:
                arrs = {
                    side: np.lib.format.open_memmap(
                        tmp, mode="w+", dtype=np.float32, shape=(m, xx.shape[1])
                    )
                    for side, tmp in (("xx", tmp_xx), ("en", tmp_en))
                }
                sv.derive(xx, en, m, seed=2, out=arrs)
                for a in arrs.values():
                    a.flush()
                del arrs
        src, tgt = np.load(src_p, mmap_mode="r"), np.load(tgt_p, mmap_mode="r")
        for kind in mine_kinds:
            LOG.info("scale: mining %d x %d with --index %s", m, m, kind)
            tsv = work / f"mined-{kind}-{m}.tsv"
            cmd = [sys.executable, "-m", "stilts.cli", "mine", str(src_p), str(tgt_p)]
            cmd += ["-o", str(tsv), "--index", kind, "--quiet"]
            if mine_nprobe:
                cmd += ["--nprobe", str(mine_nprobe)]
            t0 = time.perf_counter()
            with open(log, "ab") as lf:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=lf)
                summary = proc.stdout.read()
                _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            if os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"stilts mine --index {kind} failed (see {log})")
            out["mining"][kind] = {
                "n": m,
                "nprobe": mine_nprobe,
                "command": " ".join(["stilts", *cmd[3:]]),
                "wall_seconds": wall,
                "peak_rss": usage.ru_maxrss * 1024,
                "summary_seconds": json.loads(summary)["seconds"],
                **_gold_and_exact(tsv, src, tgt, 2000, 4),
            }
            _save_partial(work, out)
    if out["search"]:
        out["plan"] = plan(out)
    return out


def _save_partial(work: Path, out: dict) -> None:
    (work / "partial.json").write_text(json.dumps(out, indent=2, default=float))


def main(argv: list[str]) -> int:
    """Child entry points (one measured step per process)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    cmd, rest = argv[0], argv[1:]
    if cmd == "build":
        r = child_build(rest[0], rest[1], int(rest[2]), rest[3])
    elif cmd == "serve":
        r = child_serve(rest[0], rest[1], rest[2], int(rest[3]), rest[4] == "mmap", int(rest[5]))
    else:
        raise SystemExit(f"unknown step {cmd}")
    r["peak_rss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(r, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))


def plan(r: dict, sizes: tuple[int, ...] = (10_000_000, 1_000_000_000)) -> list[dict]:
    """Scale-out estimates for mining ``N x N`` on ``M`` Ray nodes from this run's per-node figures.

    Exact k-NN (``--index flat --engine ray``): every node gets database shards and scores all N
    queries against them; the rate is the measured exact-search rate (``exact_knn_seconds``:
    ``queries x n`` dot products on this machine). IVF kinds (``--index K --engine ray``: one
    index trained for the whole side, ``nlist_for(N)`` lists; each node fills its shards' rows
    into them and scans each query's ``nprobe`` lists): the rate is the measured
    vectors-scanned-per-second of the ``stilts mine --index K`` runs. Memory per node is the
    measured serving bytes per vector (anonymous RSS at ``n``) times the shard size; network is
    what each node receives (both sides' queries, plus their list ids for IVF) and sends back
    (top-k ids + scores; ``ivfpq``: ``REFINE_FACTOR x k`` candidates, re-ranked on the driver).
    """
    from stilts.index import factory as fx
    from stilts.index.knn import DEFAULT_SHARD

    dim = r.get("dim", 384)
    k = 4
    out = []
    exact_rate = r["queries"] * r["n"] / r["exact_knn_seconds"]  # dot products per second
    rates = {"flat": exact_rate}
    for kind, m in (r.get("mining") or {}).items():
        n = m["n"]
        nprobe = min(fx.nlist_for(n), m.get("nprobe") or fx.nprobe_for(fx.nlist_for(n)))
        scanned = 2 * n * nprobe * n / fx.nlist_for(n)
        rates[kind] = scanned / m["summary_seconds"]["knn"]
        rates[f"{kind}_nprobe"] = nprobe
    per_vec = {}
    for kind, s in r["search"].items():
        after, before = s["memory"]["rss_after_queries"], s["memory"]["rss_before_open"]
        key = "RssAnon" if "RssAnon" in after else "VmRSS"
        per_vec[kind] = max(after[key] - before[key], 0) / r["n"]
    for big in sizes:
        for nodes in (1, 8, 64) if big < 10**9 else (64, 256, 1024):
            shard = big / nodes
            for kind in ("flat", *[x for x in ("ivf", "ivfpq") if x in rates]):
                fetch, side = k, dim * 4  # per query: results kept, bytes sent to each node
                if kind == "flat":
                    work = 2 * big * shard
                else:
                    nprobe = rates[f"{kind}_nprobe"]
                    work = 2 * big * nprobe * shard / fx.nlist_for(big)
                    side += nprobe * (12 if kind == "ivfpq" else 8)  # list ids (+ coarse scores)
                    fetch = k * fx.REFINE_FACTOR if kind == "ivfpq" else k
                # the Ray engine's data flow: the query side is put once and pulled by every
                # node, each database shard (DEFAULT_SHARD rows) is shipped to one task, and each
                # task returns (queries x fetch) scores + ids; both directions
                tasks = max(1.0, shard / DEFAULT_SHARD)
                out.append(
                    {
                        "per_side": big,
                        "nodes": nodes,
                        "kind": kind,
                        "knn_hours_per_node": work / rates[kind] / 3600,
                        "index_gib_per_node": per_vec.get(kind, 4 * dim) * shard / 2**30,
                        "received_gib_per_node": 2 * (big * side + shard * dim * 4) / 2**30,
                        "sent_gib_per_node": 2 * tasks * big * fetch * 12 / 2**30,
                    }
                )
    return out
