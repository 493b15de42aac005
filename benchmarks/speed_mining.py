"""Mining speed: ``stilts mine`` vs its own parts, and vs the sentence-transformers recipe.

Three systems on the same BUCC-layout pair of files, timed interleaved round by round (median of
``repeats``), each with the encoder already loaded:

- ``stilts mine``: :func:`stilts.index.minefiles.mine_files` end to end (scan, dedupe, encode into
  a fresh memory-mapped cache, blocked kNN, margin, write pairs.tsv);
- ``encode+knn``: the floor it is compared with: :meth:`stilts.Encoder.encode` of both sides plus
  the index layer's exact kNN both ways, nothing else (overhead = mine / this, goal <= 1.10);
- ``sentence-transformers``: the library's bitext-mining recipe with the same weights
  (``SentenceTransformer.encode``, then cosine k-NN, ratio margin and best-first selection in
  PyTorch), as its ``parallel-sentence-mining`` example does it.

Each system's pairs are scored against the gold file (oracle F1, all pairs kept), so the speed
ratio is read at equal quality.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from stilts.benchmarks import data as bdata
from stilts.benchmarks import metrics
from stilts.benchmarks.timing import interleaved_medians, round_ratio

LOG = logging.getLogger(__name__)

MINE = "stilts mine"
FLOOR = "encode+knn"
ST = "sentence-transformers"


def write_split(s: bdata.BuccSet, directory: Path) -> tuple[Path, Path]:
    """The two sides of a BUCC set as ``id<TAB>sentence`` files (e.g. after subsampling)."""
    directory.mkdir(parents=True, exist_ok=True)
    src = directory / f"{s.lang}-en.{s.split}.{s.lang}"
    tgt = directory / f"{s.lang}-en.{s.split}.en"
    src.write_text("".join(f"{i}\t{t}\n" for i, t in zip(s.src_ids, s.src, strict=True)), "utf-8")
    tgt.write_text("".join(f"{i}\t{t}\n" for i, t in zip(s.en_ids, s.en, strict=True)), "utf-8")
    return src, tgt


def read_pairs(path: Path) -> list[tuple[float, str, str]]:
    """``score<TAB>src<TAB>tgt`` lines written by ``stilts mine``."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            score, src, tgt = line.rstrip("\n").split("\t")[:3]
            out.append((float(score), src, tgt))
    return out


def oracle_f1(pairs: list[tuple[float, str, str]], gold: set[tuple[str, str]]) -> float:
    scores = [p[0] for p in pairs]
    correct = [(p[1], p[2]) in gold for p in pairs]
    return metrics.oracle_threshold(scores, correct, len(gold)).f1


def st_recipe(model, src: list[str], tgt: list[str], k: int = 4, batch_size: int = 32):
    """sentence-transformers' bitext-mining example: encode, k-NN, ratio margin, best-first.

    The baseline is written the library's way (PyTorch tensors throughout), not with stilts code.

    Returns:
        ``[(score, src_row, tgt_row)]`` best first, each sentence used once.
    """
    import torch

    x = model.encode(src, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
    y = model.encode(tgt, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)

    def knn(a, b):
        sims, idx = [], []
        for start in range(0, len(a), 4096):
            s, i = torch.topk(a[start : start + 4096] @ b.T, k=min(k, len(b)), dim=1)
            sims.append(s)
            idx.append(i)
        return torch.cat(sims), torch.cat(idx)

    x2y_sim, x2y_ind = knn(x, y)
    y2x_sim, y2x_ind = knn(y, x)
    x2y_mean, y2x_mean = x2y_sim.mean(1), y2x_sim.mean(1)

    def score(a, b, ind, a_mean, b_mean):
        cos = (a[:, None, :] * b[ind]).sum(-1)
        return cos / ((a_mean[:, None] + b_mean[ind]) / 2)

    fwd = score(x, y, x2y_ind, x2y_mean, y2x_mean)
    bwd = score(y, x, y2x_ind, y2x_mean, x2y_mean)
    fwd_best = x2y_ind[torch.arange(len(x)), fwd.argmax(1)]
    bwd_best = y2x_ind[torch.arange(len(y)), bwd.argmax(1)]
    src_rows = torch.cat([torch.arange(len(x)), bwd_best]).tolist()
    tgt_rows = torch.cat([fwd_best, torch.arange(len(y))]).tolist()
    scores = torch.cat([fwd.max(1).values, bwd.max(1).values]).tolist()
    seen_s, seen_t, out = set(), set(), []
    for i in np.argsort(-np.asarray(scores), kind="stable"):
        s, t = src_rows[i], tgt_rows[i]
        if s in seen_s or t in seen_t:
            continue
        seen_s.add(s)
        seen_t.add(t)
        out.append((scores[i], s, t))
    return out


def run(
    bucc_set: bdata.BuccSet,
    model: str = "default",
    precision: str = "int8",
    repeats: int = 3,
    k: int = 4,
    batch_size: int = 32,
    with_st: bool = True,
    checkpoint: str | None = None,
    work_dir: str | Path | None = None,
) -> dict:
    """Time the three systems on one BUCC set (see the module docstring)."""
    from stilts import Encoder
    from stilts.index.knn import knn
    from stilts.index.minefiles import mine_files

    enc = Encoder(model, precision=precision)
    tmp = Path(work_dir or tempfile.mkdtemp(prefix="stilts-bench-mine-"))
    src_path, tgt_path = write_split(bucc_set, tmp / "data")
    runs = {"n": 0}
    last: dict = {}

    def stilts_mine():
        runs["n"] += 1
        out = tmp / f"run{runs['n']}" / "pairs.tsv"
        last["summary"] = mine_files(
            src_path,
            tgt_path,
            out,
            model=enc,
            k=k,
            index="flat",
            batch_size=batch_size,
            progress=False,
        )
        last["pairs"] = out

    def floor():
        x = enc.encode(bucc_set.src, kind="bitext", batch_size=batch_size)
        y = enc.encode(bucc_set.en, kind="bitext", batch_size=batch_size)
        knn(x, y, k)
        knn(y, x, k)

    systems = {MINE: stilts_mine, FLOOR: floor}
    st_info = None
    if with_st:
        from stilts.benchmarks.systems import sentence_transformers_model

        m = enc.manifest
        ckpt = checkpoint or (m.source or {}).get("checkpoint")
        st = sentence_transformers_model(ckpt, m.pooling, m.max_len)
        prefix = m.prefix("bitext")
        src_p = [prefix + t for t in bucc_set.src]
        tgt_p = [prefix + t for t in bucc_set.en]

        def st_run():
            last["st"] = st_recipe(st, src_p, tgt_p, k, batch_size)

        systems[ST] = st_run
        st_info = {"checkpoint": str(ckpt)}
    # warm-up on a slice (allocations, lazy init), then the timed rounds
    t0 = time.perf_counter()
    enc.encode(bucc_set.src[:64], kind="bitext")
    if with_st:
        st.encode(src_p[:64], batch_size=batch_size)
    LOG.info(
        "mining: warm-up %.1fs; %d rounds of %s", time.perf_counter() - t0, repeats, list(systems)
    )
    timed = interleaved_medians(systems, repeats)
    gold = bucc_set.gold
    quality = {MINE: oracle_f1(read_pairs(last["pairs"]), gold)}
    if with_st:
        quality[ST] = oracle_f1(
            [(s, bucc_set.src_ids[a], bucc_set.en_ids[b]) for s, a, b in last["st"]], gold
        )
    out = {
        "pair": f"{bucc_set.lang}-en",
        "split": bucc_set.split,
        "n_src": len(bucc_set.src),
        "n_tgt": len(bucc_set.en),
        "n_gold": len(gold),
        "k": k,
        "batch_size": batch_size,
        "repeats": repeats,
        "precision": enc.precision,
        "threads": enc.threads,
        "systems": {name: {**t, "f1_oracle": quality.get(name)} for name, t in timed.items()},
        "mine_seconds_breakdown": last["summary"]["seconds"],
        "overhead_vs_encode_knn": round_ratio(timed[MINE], timed[FLOOR]),
        "sentence_transformers": st_info,
    }
    if with_st:
        out["speedup_vs_sentence_transformers"] = round_ratio(timed[ST], timed[MINE])
    if work_dir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
