"""``--precision auto`` on a CPU: the fastest route that passes the parity gate, measured here.

On the first load of a model on a CPU not seen before (and on ``stilts models install``) every
route that may serve ``auto`` (:data:`stilts.runtimes.routes.ROUTES`, dynamic int8 excluded) is loaded and
checked against the fp32 graph on the parity sentences:

- mean cosine >= 0.9999 and every sentence's >= 0.99 (the export's per-sentence gate);
- batch invariance: each sentence alone vs in one batch, max abs difference < 1e-5.

The routes that pass are timed at a small (1) and a large (32) batch, interleaved round by round
(median), in what is left of :data:`BUDGET_SECONDS` (20 s for the whole choice: loads, parity,
timing; at least 4 s of timing, at most 9 rounds). A model too slow for three rounds of 32
sentences in that time is timed on fewer sentences (16, then 8; the large batch is then those
sentences in one call) and in fewer rounds (down to one): each route's record says how many
(``timed_sentences``, ``rounds``). The ranking per workload (``serve``: small batches,
``batch``: large ones) is recorded in ``$STILTS_HOME/cpu-routes/<model>-<key>.json``, keyed by the
model (name, fingerprint, files), the CPU signature (the instruction-set flags that matter for
inference, the number of cores, the architecture) and the runtimes' versions, with a SHA-256 of
its content; a later load on
the same CPU reads it (an unreadable or altered record is measured again). A route computing in
bf16 is chosen only on a CPU whose flags show native bf16 (AVX-512 BF16 or AMX-BF16): elsewhere
OpenVINO would emulate or ignore the hint, and the choice must never depend on a CPU's name.
``STILTS_AUTO_ROUTE=manifest`` skips the measurement and loads the manifest's ``cpu_precision``.

A model whose graphs keep their weights in external data (over the protobuf limit, see
:mod:`stilts.graphs.onnxfile`) is measured one route at a time: each route is loaded, gated,
timed in its share of the budget and released before the next is loaded, so the choice never
holds more than one copy of the weights (interleaved rounds would hold every route's). There
:data:`BUDGET_SECONDS` is the timing's alone (loading and gating 2 GB graphs take what they take).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stilts.encoding.session import RouteSession, default_spin, providers_for
from stilts.fsutil import atomic_write_text
from stilts.graphs.parity import (
    GATE_BATCH_DIFF,
    GATE_MEAN_COSINE,
    GATE_MIN_COSINE,
    PARITY_SAMPLE,
    gate,
)
from stilts.home import resolve, stilts_home
from stilts.manifest import FP32_NAME, Manifest, data_name
from stilts.runtimes.batching import length_batches
from stilts.runtimes.cpu import (  # noqa: F401  (re-exported: the routes' CPU signature)
    NATIVE_BF16_FLAGS,
    RELEVANT_FLAGS,
    cpu_flags,
    cpu_signature,
    native_bf16,
    runtime_versions,
)
from stilts.runtimes.routes import ROUTES, default_threads, route_graph, runtime_available

LOG = logging.getLogger(__name__)

RECORD_DIR = "cpu-routes"
RECORD_VERSION = 2  # 2: OpenVINO rows padded by their own length (RouteSession.length_bucket)
SMALL_BATCH = 1
LARGE_BATCH = 32
BUDGET_SECONDS = 20.0
MIN_ROUNDS = 3
MAX_ROUNDS = 9
# The fewest sentences a timing round runs at each batch size (a model too slow for 32).
MIN_TIMED = 8
ENV = "STILTS_AUTO_ROUTE"


def record_path(manifest: Manifest, signature: dict | None = None) -> Path:
    """Where the choice for this model on this CPU is recorded."""
    key = json.dumps(
        {
            "name": manifest.name,
            "fingerprint": manifest.fingerprint,
            "files": manifest.files,
            "cpu": signature or cpu_signature(),
            "runtimes": runtime_versions(),
        },
        sort_keys=True,
    )
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", manifest.name)[:60]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return stilts_home() / RECORD_DIR / f"{safe}-{digest}.json"


def _body_sha(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "sha256": _body_sha(record)}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def load_record(path: Path) -> dict | None:
    """The record at ``path``; None when absent, unreadable or altered (logged: measured again)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("sha256") != _body_sha(record) or record.get("version") != RECORD_VERSION:
            raise ValueError("checksum or version does not match")
        return record
    except (OSError, ValueError, AttributeError) as e:
        LOG.warning("%s: unusable route record (%s); measuring again", path, e)
        return None


def parity(enc: RouteSession, ref: np.ndarray, texts: Sequence[str]) -> dict:
    """A route's vectors against the fp32 reference ``ref`` (every text, in batches of 32) and
    batch invariance: the first 32 texts alone vs in those batches."""
    vecs = enc.encode(list(texts), kind="bitext", batch_size=LARGE_BATCH)
    sample = list(texts)[:LARGE_BATCH]
    alone = enc.encode(sample, kind="bitext", batch_size=1)
    cos = np.sum(vecs * ref, axis=1) / np.maximum(
        np.linalg.norm(vecs, axis=1) * np.linalg.norm(ref, axis=1), 1e-12
    )
    return {
        "cosine_vs_fp32_mean": float(cos.mean()),
        "cosine_vs_fp32_min": float(cos.min()),
        "batch_vs_alone_max_abs": float(np.abs(vecs[: len(sample)] - alone).max()),
    }


def select(routes: dict[str, dict], flags: Sequence[str]) -> dict[str, list[str]]:
    """The routes that may serve ``auto``, fastest first, per workload.

    A route takes part when it may serve ``auto`` at all (not dynamic int8), passed the gate and
    was timed; a bf16 route only where ``flags`` show native bf16.

    Args:
        routes: per route name, ``qualifies`` and ``sentences_per_second`` (``small``, ``large``),
            as :func:`measure` records them.
        flags: the CPU's flags (:func:`cpu_flags`).

    Returns:
        ``{"serve": [...], "batch": [...]}``: ranked by small- and large-batch speed.
    """
    eligible = [
        n
        for n, r in routes.items()
        if n in ROUTES
        and ROUTES[n].auto_eligible
        and r.get("qualifies")
        and r.get("sentences_per_second")
        and (not ROUTES[n].bf16 or native_bf16(flags))
    ]
    return {
        workload: sorted(eligible, key=lambda n: -routes[n]["sentences_per_second"][size])
        for workload, size in (("serve", "small"), ("batch", "large"))
    }


def _overhead_tokens(small: dict, large: dict) -> float | None:
    """The fixed cost of a call in padded tokens, from time = calls * c0 + c1 * tokens at both
    batch sizes (None when the two timings do not determine it)."""
    a = np.array([[small["calls"], small["tokens"]], [large["calls"], large["tokens"]]], float)
    try:
        c0, c1 = np.linalg.solve(a, [small["seconds"], large["seconds"]])
    except np.linalg.LinAlgError:
        return None
    if c0 <= 0 or c1 <= 0:
        return None
    return float(min(max(c0 / c1, 1.0), 1024.0))


def _work(enc: RouteSession, texts: Sequence[str], batch_size: int) -> dict:
    toks = enc.tokenize(list(texts), kind="bitext")
    lengths = [len(t) for t in toks]
    batches = [
        [toks[i] for i in idx]
        for idx in length_batches(lengths, batch_size, bucket=enc.length_bucket)
    ]
    return {
        "batches": batches,
        "calls": len(batches),
        "tokens": sum(len(b) * enc.padded_length(max(len(t) for t in b)) for b in batches),
    }


def _plan(encoders: dict, timing: list[str], budget: float) -> tuple[int, int]:
    """How many of the ``timing`` sentences each round times, and at least how many rounds.

    One sentence of middle length is run through each session (they are warm from the parity
    check) and a round is costed at that time per sentence, twice (the small and the large
    batch). Small models time all :data:`LARGE_BATCH` sentences in at least :data:`MIN_ROUNDS`
    rounds, as always; when that does not fit ``budget`` (a 24-layer model on a few cores:
    one round of 32 + 32 sentences takes 10-20 s per route) the sample shrinks (16, then
    :data:`MIN_TIMED` sentences) and then the rounds (to one), so the timing keeps to about its
    budget whatever the model's size."""
    per_sentence = 0.0
    for enc in encoders.values():
        toks = enc.tokenize([sorted(timing, key=len)[len(timing) // 2]], kind="bitext")
        t = time.perf_counter()
        enc.embed_tokenized(toks)
        per_sentence += time.perf_counter() - t
    for n in (len(timing), 16, MIN_TIMED):
        n = min(n, len(timing))
        if MIN_ROUNDS * 2 * n * per_sentence <= budget or n == min(MIN_TIMED, len(timing)):
            break
    rounds = MIN_ROUNDS
    while rounds > 1 and rounds * 2 * n * per_sentence > budget:
        rounds -= 1
    return n, rounds


def _time_routes(encoders: dict, timing: list[str], budget: float) -> dict:
    """Time each session of ``encoders`` at the small and the large batch, interleaved round by
    round, in about ``budget`` seconds (at least :data:`MIN_ROUNDS` rounds, at most
    :data:`MAX_ROUNDS`; fewer sentences and rounds when those do not fit: :func:`_plan`).
    Returns per route its work (:func:`_work`), seconds per round and sentences timed."""
    budget = max(budget, 4.0 / max(len(encoders), 1))
    timed, min_rounds = _plan(encoders, timing, budget)
    sample = timing[:timed]
    work = {
        n: {s: _work(e, sample, b) for s, b in (("small", SMALL_BATCH), ("large", LARGE_BATCH))}
        for n, e in encoders.items()
    }
    seconds: dict[str, dict[str, list[float]]] = {n: {"small": [], "large": []} for n in encoders}
    t_timing = time.perf_counter()
    for round_ in range(MAX_ROUNDS):
        for size in ("small", "large"):
            for n, enc in encoders.items():
                t = time.perf_counter()
                for batch in work[n][size]["batches"]:
                    enc.embed_tokenized(batch)
                seconds[n][size].append(time.perf_counter() - t)
        spent = time.perf_counter() - t_timing
        if round_ + 1 >= min_rounds and spent * (round_ + 2) / (round_ + 1) > budget:
            break
        if spent > budget:
            break
    return {n: (work[n], seconds[n], timed) for n in encoders}


def measure(
    model: str | os.PathLike,
    texts: Sequence[str] | None = None,
    budget_seconds: float = BUDGET_SECONDS,
    threads: int | None = None,
    progress: bool = False,
) -> dict:
    """Gate and time every ``auto`` candidate route of ``model`` on this CPU (see module doc).

    Args:
        model: an installed model name or a model directory.
        texts: the parity sentences (default: the export's built-in multilingual sample).
        budget_seconds: time for the timing rounds (at least one round is run).
        threads: intra-op threads (as the encoder: None reads ``STILTS_THREADS``, else all cores).
        progress: show a tqdm bar over the routes.

    Returns:
        The record: CPU signature, per route its parity, gate result and speeds, and the ranking.
    """
    t_start = time.perf_counter()
    model_dir = resolve(model)
    manifest = Manifest.load(model_dir)
    threads = default_threads(threads)
    texts = list(texts or PARITY_SAMPLE)
    signature = cpu_signature()
    routes: dict[str, dict] = {}
    encoders = {}
    ref = None
    names = [
        n for n, r in ROUTES.items() if r.auto_eligible and route_graph(r, model_dir).is_file()
    ]
    names.sort(key=lambda n: n != "fp32")  # the reference first
    providers = providers_for("auto")
    spin = default_spin(None)
    # a model over the protobuf limit: one route's encoder in memory at a time
    one_at_a_time = manifest.weights_sha256 is None and (model_dir / data_name(FP32_NAME)).is_file()
    timing = [t for t in texts if t.strip()] or texts
    timing = (timing * (-(-LARGE_BATCH // len(timing))))[:LARGE_BATCH]
    work: dict[str, dict] = {}
    seconds: dict[str, dict[str, list[float]]] = {}
    timed: dict[str, int] = {}
    timing_spent = 0.0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(names), desc="routes: parity", unit="route")
    for name in names:
        route = ROUTES[name]
        entry: dict = {"runtime": route.runtime, "description": route.description}
        routes[name] = entry
        if not runtime_available(route.runtime):
            entry.update(qualifies=False, refused=f"{route.runtime} is not installed")
        else:
            try:
                t = time.perf_counter()
                enc = RouteSession(
                    model_dir, manifest, name, threads, spin, providers, verify=False
                )
                entry["load_seconds"] = time.perf_counter() - t
                if ref is None:
                    ref = enc.encode(texts, kind="bitext", batch_size=LARGE_BATCH)
                entry.update(parity(enc, ref, texts))
                why = gate(entry)
                entry["qualifies"] = why is None
                if why:
                    entry["refused"] = why
                elif one_at_a_time:
                    # the timing's budget shared by the routes still to time (loading such
                    # a model takes what it takes: it is not timing)
                    left = len(names) - names.index(name)
                    share = (budget_seconds - timing_spent) / left
                    t = time.perf_counter()
                    work[name], seconds[name], timed[name] = _time_routes(
                        {name: enc}, timing, share
                    )[name]
                    timing_spent += time.perf_counter() - t
                    encoders[name] = None  # timed: its weights are released now
                else:
                    encoders[name] = enc
                enc = None  # a route timed alone (or refused) is released before the next loads
            except (
                Exception
            ) as e:  # a runtime that cannot compile this graph loses, it does not fail
                LOG.warning("route %s failed on %s: %s", name, model_dir, e)
                entry.update(qualifies=False, refused=f"failed: {type(e).__name__}: {e}")
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    t_timing = time.perf_counter()
    if not one_at_a_time:
        # the whole choice (loads, parity, timing) takes about budget_seconds: timing gets the rest
        budget = max(budget_seconds - (t_timing - t_start), 4.0)
        for n, (w, secs, k) in _time_routes(encoders, timing, budget).items():
            work[n], seconds[n], timed[n] = w, secs, k
        timing_spent = time.perf_counter() - t_timing
    for n in encoders:
        per = {s: statistics.median(seconds[n][s]) for s in ("small", "large")}
        routes[n]["sentences_per_second"] = {s: timed[n] / per[s] for s in per}
        routes[n]["rounds"] = len(seconds[n]["small"])
        routes[n]["timed_sentences"] = timed[n]
        routes[n]["call_overhead_tokens"] = _overhead_tokens(
            {**work[n]["small"], "seconds": per["small"]},
            {**work[n]["large"], "seconds": per["large"]},
        )
    ranking = select(routes, signature["flags"])
    return {
        "version": RECORD_VERSION,
        "model": manifest.name,
        "fingerprint": manifest.fingerprint,
        "cpu": signature,
        "runtimes": runtime_versions(),
        "native_bf16": native_bf16(signature["flags"]),
        "threads": threads,
        "measured_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - t_start, 2),
        "timing_seconds": round(timing_spent, 2),
        "budget_seconds": budget_seconds,
        "one_route_at_a_time": one_at_a_time,
        "batch_sizes": {"small": SMALL_BATCH, "large": LARGE_BATCH},
        "parity_sentences": len(texts),
        "gate": {
            "mean_cosine": GATE_MEAN_COSINE,
            "min_cosine": GATE_MIN_COSINE,
            "batch_vs_alone_max_abs": GATE_BATCH_DIFF,
        },
        "routes": routes,
        "ranking": ranking,
        "chosen": {w: (r[0] if r else None) for w, r in ranking.items()},
    }


def choose(
    model: str | os.PathLike,
    texts: Sequence[str] | None = None,
    budget_seconds: float = BUDGET_SECONDS,
    threads: int | None = None,
    force: bool = False,
    progress: bool = False,
) -> dict:
    """The record for ``model`` on this CPU: read when recorded (unless ``force``), else measured
    and recorded. Returns the record, with ``path`` added."""
    model_dir = resolve(model)
    manifest = Manifest.load(model_dir)
    path = record_path(manifest)
    record = None if force else load_record(path)
    if record is None:
        LOG.info(
            "choosing the CPU route of %s on this CPU (first time here: about %.0fs)",
            manifest.name,
            budget_seconds,
        )
        record = measure(model_dir, texts, budget_seconds, threads, progress)
        try:
            save_record(path, record)
        except OSError as e:  # a read-only or full cache: use the choice, measure again next time
            LOG.warning("%s: could not record the route choice (%s)", path, e)
        LOG.info(
            "%s: auto serves with %s, batch jobs with %s (recorded in %s)",
            manifest.name,
            record["chosen"]["serve"],
            record["chosen"]["batch"],
            path,
        )
    return {**record, "path": str(path)}


def recorded(model: str | os.PathLike) -> dict | None:
    """The record for ``model`` on this CPU, or None when it has not been measured here."""
    model_dir = resolve(model)
    path = record_path(Manifest.load(model_dir))
    record = load_record(path)
    return None if record is None else {**record, "path": str(path)}


def ranked_routes(
    model_dir: Path, manifest: Manifest, workload: str, threads: int | None = None
) -> tuple[list[str], dict[str, float | None]]:
    """What ``auto`` loads on this CPU for ``workload``: the ranking (first = the choice, the rest
    fallbacks when a runtime is missing) and each route's measured call overhead in tokens.

    Falls back to the manifest's ``cpu_precision`` when ``STILTS_AUTO_ROUTE=manifest`` or when no
    route qualified."""
    default = manifest.default_precision(model_dir)
    if os.environ.get(ENV, "").strip().lower() == "manifest":
        return [default], {}
    record = choose(model_dir, threads=threads)
    ranked = list(record["ranking"].get(workload) or [])
    if not ranked:
        LOG.warning("%s: no route passed the parity gate on this CPU; using %s", model_dir, default)
    if default not in ranked:
        ranked.append(default)
    overhead = {n: r.get("call_overhead_tokens") for n, r in record["routes"].items()}
    return ranked, overhead
