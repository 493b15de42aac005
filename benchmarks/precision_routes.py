"""``stilts bench routes``: ways to build a model's CPU graph, measured side by side.

A route turns the model's fp32 graph into a CPU graph (ONNX Runtime fusions, 4-bit weights,
dynamic or static int8, ...). For each route, in one process: file size, load time, parity with
fp32 and batch invariance on dev sentences, sentences/s at two batch sizes (interleaved rounds,
median, ratios against the shipped ``int8`` and ``fp32`` of the same rounds), and retrieval accuracy
through :func:`stilts.benchmarks.accuracy.run`: Tatoeba top-1 per language (mean, and the worst
language's change against fp32) and BUCC F1. The model's own graphs (``fp32``, ``int8``, ``q4``)
are routes too, so the table says where the shipped precisions stand among the alternatives, and
so are the runtime routes of :mod:`stilts.runtimes.routes` (OpenVINO f32 and bf16 on the fp32 graph, where
OpenVINO is installed). The report names the CPU's flags and what ``--precision auto`` chose on
this CPU (:mod:`stilts.encoding.autoroute`, when recorded).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stilts.benchmarks.timing import interleaved_medians, round_ratio
from stilts.manifest import GRAPHS

LOG = logging.getLogger(__name__)

BUILT = "route.onnx"


@dataclasses.dataclass(frozen=True)
class Source:
    """What a route is built from: the model's fp32 graph and some dev sentences."""

    model_dir: Path
    calibration: list[str]

    @property
    def fp32(self) -> Path:
        return self.model_dir / GRAPHS["fp32"]

    def attention_shape(self) -> tuple[int, int]:
        """(heads, hidden) for the attention fusions, from the source checkpoint's config.json
        (the exported graph computes its reshapes at run time, so ORT cannot infer them)."""
        import json

        from stilts.errors import ErrorCode, StiltsError
        from stilts.manifest import Manifest

        src = Manifest.load(self.model_dir).source or {}
        config = Path(str(src.get("checkpoint", ""))) / "config.json"
        if not config.is_file():
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"routes that fuse attention need the source checkpoint's config.json; "
                f"{config} is missing",
                "routes",
            )
        c = json.loads(config.read_text())
        return int(c["num_attention_heads"]), int(c["hidden_size"])


@dataclasses.dataclass(frozen=True)
class Route:
    """One candidate CPU graph: a graph the model ships (``graph``) or a builder, run on the
    runtime route ``precision`` (:data:`stilts.runtimes.routes.ROUTES`; onnxruntime fp32 by default)."""

    name: str
    description: str
    graph: str | None = None
    build: Callable[[Source, Path], None] | None = None
    precision: str = "fp32"


def _fused(src: Source, separate_qkv: bool = False):
    import onnx

    from stilts.graphs.quantize import fuse_transformer

    heads, hidden = src.attention_shape()
    return fuse_transformer(onnx.load(str(src.fp32)), heads, hidden, separate_qkv=separate_qkv)


def _save(model, out: Path) -> None:
    from stilts.graphs.quantize import save

    save(model, out)


def _q4(accuracy_level: int, separate_qkv: bool = False, matmuls: bool = True):
    def build(src: Source, out: Path) -> None:
        from stilts.graphs.quantize import to_q4

        model, _ = to_q4(_fused(src, separate_qkv), accuracy_level, matmuls=matmuls)
        _save(model, out)

    return build


def _fused_fp32(src: Source, out: Path) -> None:
    _save(_fused(src), out)


def _int8(**options):
    def build(src: Source, out: Path) -> None:
        from stilts.graphs.export import quantize_int8

        quantize_int8(src.fp32, out, **options)

    return build


def _int8_fp16_table(src: Source, out: Path) -> None:
    import onnx

    from stilts.graphs.export import quantize_int8
    from stilts.graphs.quantize import to_q4

    tmp = out.with_suffix(".matmul.onnx")
    quantize_int8(src.fp32, tmp, op_types=("MatMul",))
    model, _ = to_q4(onnx.load(str(tmp)), embeddings="fp16", matmuls=False)
    tmp.unlink()
    _save(model, out)


def _int8_static(src: Source, out: Path) -> None:
    """QDQ int8 with activation ranges calibrated (MinMax) on dev sentences."""
    from stilts.runtimes.ortload import load_onnxruntime

    load_onnxruntime()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from stilts.encoding.encoder import Encoder

    enc = Encoder(src.model_dir, precision="fp32", threads=1)
    toks = enc.tokenize(src.calibration, kind="bitext")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(toks), 16))

        def get_next(self):
            start = next(self.batches, None)
            if start is None:
                return None
            return enc.batch_feeds(toks[start : start + 16])

    root = logging.getLogger()  # the quantiser logs every node on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(src.fp32),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    finally:
        root.setLevel(level)


ROUTES: dict[str, Route] = {
    r.name: r
    for r in (
        Route("fp32", "the exported graph (reference)", graph="fp32"),
        Route("fp32-fused", "ORT fusions: Attention, SkipLayerNorm, BiasGelu", build=_fused_fp32),
        Route(
            "fp32-q4table",
            "fusions; word table 4-bit (GatherBlockQuantized), MatMuls fp32",
            build=_q4(4, matmuls=False),
        ),
        Route("q4", "shipped: fusions, MatMulNBits 4-bit block 32 (acc. level 4), q4 table", "q4"),
        Route("q4-acc1", "q4 with accuracy_level 1 (fp32 compute)", build=_q4(1)),
        Route(
            "q4-mha",
            "MultiHeadAttention fusion: Q/K/V MatMuls 4-bit too (acc. level 4)",
            build=_q4(4, separate_qkv=True),
        ),
        Route("int8", "shipped: dynamic int8, per-channel S8 weights, MatMul + Gather", "int8"),
        Route(
            "int8-reduce-range",
            "dynamic int8 with reduce_range (7-bit)",
            build=_int8(reduce_range=True),
        ),
        Route("int8-u8u8", "dynamic int8, U8 weights (U8U8)", build=_int8(unsigned_weights=True)),
        Route(
            "int8-matmul",
            "dynamic int8 MatMuls, fp32 word table",
            build=_int8(op_types=("MatMul",)),
        ),
        Route("int8-fp16table", "dynamic int8 MatMuls, fp16 word table", build=_int8_fp16_table),
        Route(
            "int8-static", "static QDQ int8 MatMuls, MinMax on dev sentences", build=_int8_static
        ),
        Route("ov-f32", "OpenVINO CPU, the fp32 graph in f32", graph="fp32", precision="ov-f32"),
        Route(
            "ov-bf16",
            "OpenVINO CPU, the fp32 graph, INFERENCE_PRECISION_HINT=bf16",
            graph="fp32",
            precision="ov-bf16",
        ),
    )
}


def runnable(names: list[str]) -> list[str]:
    """``names`` less the routes whose runtime is not installed here (one log line each)."""
    from stilts.runtimes.routes import ROUTES as RUNTIME_ROUTES
    from stilts.runtimes.routes import runtime_available

    out = []
    for n in names:
        runtime = RUNTIME_ROUTES[ROUTES[n].precision].runtime
        if runtime_available(runtime):
            out.append(n)
        else:
            LOG.warning("route %s left out: %s is not installed", n, runtime)
    return out


def check_routes(names: list[str]) -> list[str]:
    """The routes asked for, ``fp32`` first (every delta is against it)."""
    from stilts.errors import invalid

    bad = [n for n in names if n not in ROUTES]
    if bad:
        raise invalid(f"unknown routes {bad}; choose from {', '.join(ROUTES)}", "routes")
    return ["fp32", *[n for n in dict.fromkeys(names) if n != "fp32"]]


def graph_path(route: Route, src: Source, work_dir: Path) -> Path:
    """The route's graph: the model's own file, or built once into ``work_dir/<route>/``."""
    if route.graph is not None:
        return src.model_dir / GRAPHS[route.graph]
    out = work_dir / route.name / BUILT
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        t0 = time.perf_counter()
        route.build(src, tmp)
        shutil.move(tmp, out)
        LOG.info("built %s in %.0fs (%s)", route.name, time.perf_counter() - t0, out)
    return out


def _load_seconds(model_dir: Path, graph: Path, repeats: int, precision: str = "fp32") -> float:
    from stilts.encoding.encoder import Encoder

    return statistics.median(
        Encoder(model_dir, precision=precision, graph=graph).load_seconds for _ in range(repeats)
    )


def measure_graphs(
    encoders: dict, sentences: list[str], batch_sizes: list[int], repeats: int
) -> dict[str, dict]:
    """Parity with fp32, batch invariance and sentences/s per batch size for each encoder."""
    ref = encoders["fp32"].encode(sentences, kind="bitext", batch_size=32)
    sample = sentences[:32]
    out: dict[str, dict] = {}
    for name, enc in encoders.items():
        vecs = enc.encode(sentences, kind="bitext", batch_size=32)
        cos = np.sum(vecs * ref, axis=1)
        batched = enc.encode(sample, kind="bitext", batch_size=32)
        alone = np.concatenate([enc.encode([t], kind="bitext", batch_size=1) for t in sample])
        out[name] = {
            "cosine_vs_fp32_mean": float(cos.mean()),
            "cosine_vs_fp32_min": float(cos.min()),
            "max_abs_vs_fp32": float(np.abs(vecs - ref).max()),
            "batch_vs_alone_max_abs": float(np.abs(batched - alone).max()),
            "speed": {},
        }
    for bs in batch_sizes:
        LOG.info("routes: timing batch size %d, %d sentences", bs, len(sentences))
        timed = interleaved_medians(
            {
                name: (lambda e=enc, b=bs: e.encode(sentences, kind="bitext", batch_size=b))
                for name, enc in encoders.items()
            },
            repeats,
        )
        for name, t in timed.items():
            out[name]["speed"][str(bs)] = {
                **t,
                "sentences_per_second": len(sentences) / t["median_seconds"],
                "vs": {
                    other: round_ratio(timed[other], t)
                    for other in ("int8", "fp32")
                    if other in timed and other != name
                },
            }
    return out


def accuracy_figures(results: dict, name: str, ref: str = "fp32") -> dict:
    """Tatoeba means, the worst language's change against ``ref`` and BUCC F1 for one route."""
    models = results["models"]
    out: dict = {}
    tat = models[name].get("tatoeba")
    if tat:
        per, ref_per = tat["per_language"], models[ref]["tatoeba"]["per_language"]
        for sc in ("cosine", "margin"):
            out[f"tatoeba_{sc}_xx2en"] = tat[sc]["mean_xx2en"]
            out[f"tatoeba_{sc}_en2xx"] = tat[sc]["mean_en2xx"]
        deltas = {xx: per[xx]["cosine"]["xx2en"] - ref_per[xx]["cosine"]["xx2en"] for xx in per}
        worst = min(deltas, key=deltas.get)
        out["tatoeba_languages"] = len(per)
        out["tatoeba_worst_language"] = worst
        out["tatoeba_worst_delta"] = deltas[worst]
        out["tatoeba_languages_below_ref"] = sum(d < 0 for d in deltas.values())
    bucc = models[name].get("bucc")
    if bucc:
        out["bucc_f1_oracle"] = bucc["mean_f1_oracle"]
        out["bucc_f1_calibrated"] = bucc["mean_f1_calibrated"]
    return out


def run(
    model: str,
    routes: list[str],
    work_dir: Path,
    tatoeba: dict | None,
    bucc: dict | None,
    speed_sentences: list[str],
    batch_sizes: list[int],
    repeats: int = 3,
    bucc_max: int | None = None,
    progress: bool = True,
) -> dict:
    """Build (once) and measure every route; ``fp32`` is the reference for every delta."""
    from stilts.benchmarks import accuracy
    from stilts.benchmarks.systems import StiltsSystem
    from stilts.encoding import autoroute
    from stilts.home import resolve

    names = runnable(check_routes(routes))
    model_dir = resolve(model)
    src = Source(model_dir, speed_sentences)
    graphs = {n: graph_path(ROUTES[n], src, work_dir) for n in names}
    systems = {
        n: StiltsSystem(model_dir, precision=ROUTES[n].precision, name=n, graph=g)
        for n, g in graphs.items()
    }
    encoders = {n: s.encoder for n, s in systems.items()}
    measured = measure_graphs(encoders, speed_sentences, batch_sizes, repeats)
    acc = accuracy.run(list(systems.values()), tatoeba, bucc, bucc_max=bucc_max, progress=progress)
    table: dict[str, dict] = {}
    for n in names:
        table[n] = {
            "description": ROUTES[n].description,
            "graph": str(graphs[n]),
            "megabytes": encoders[n].graph_bytes / 1e6,  # with its weights file, if any
            "load_seconds": _load_seconds(model_dir, graphs[n], repeats, ROUTES[n].precision),
            **measured[n],
            **accuracy_figures(acc, n),
        }
    recorded = autoroute.recorded(model_dir)
    return {
        "model": str(model_dir),
        "cpu": autoroute.cpu_signature(),
        "auto": None
        if recorded is None
        else {
            "chosen": recorded["chosen"],
            "ranking": recorded["ranking"],
            "measured_at": recorded["measured_at"],
            "record": recorded["path"],
        },
        "speed_sentences": len(speed_sentences),
        "batch_sizes": batch_sizes,
        "repeats": repeats,
        "bucc_max": bucc_max,
        "routes": table,
        "accuracy": acc,
    }


def _pts(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}"


def markdown(results: dict) -> str:
    """The route table: speed, size, load time, parity, batch invariance, accuracy."""
    rows = results["routes"]
    bs = [str(b) for b in results["batch_sizes"]]
    ref = rows["fp32"]
    head = [
        "route",
        "MB",
        "load s",
        *[f"sent/s b{b} (x int8)" for b in bs],
        "batch-inv. max abs",
        "cos vs fp32 mean / min",
        "Tatoeba cos xx→en (Δ pts)",
        "worst language Δ",
        "margin xx→en Δ",
        "BUCC F1 (Δ pts)",
    ]
    cpu = results.get("cpu") or {}
    auto = results.get("auto")
    lines = [
        f"CPU flags: {' '.join(cpu.get('flags') or []) or '-'}; {cpu.get('cores', '?')} cores. "
        + (
            f"`--precision auto` on this CPU (recorded {auto['measured_at']}): serving "
            f"`{auto['chosen']['serve']}`, batch jobs `{auto['chosen']['batch']}`."
            if auto
            else "`--precision auto` not measured on this CPU yet (`stilts models install`)."
        ),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, r in rows.items():
        speed = []
        for b in bs:
            s = r["speed"][b]
            ratio = s["vs"].get("int8")
            speed.append(f"{s['sentences_per_second']:.1f}" + (f" ({ratio:.2f}x)" if ratio else ""))
        tat = r.get("tatoeba_cosine_xx2en")
        bucc = r.get("bucc_f1_oracle")
        cells = [
            f"`{name}`",
            f"{r['megabytes']:.0f}",
            f"{r['load_seconds']:.2f}",
            *speed,
            f"{r['batch_vs_alone_max_abs']:.1e}",
            f"{r['cosine_vs_fp32_mean']:.6f} / {r['cosine_vs_fp32_min']:.5f}",
            "-" if tat is None else f"{tat:.4f} ({_pts(tat - ref['tatoeba_cosine_xx2en'])})",
            "-"
            if "tatoeba_worst_language" not in r
            else f"{r['tatoeba_worst_language']} {_pts(r['tatoeba_worst_delta'])}",
            "-" if tat is None else _pts(r["tatoeba_margin_xx2en"] - ref["tatoeba_margin_xx2en"]),
            "-" if bucc is None else f"{bucc:.4f} ({_pts(bucc - ref['bucc_f1_oracle'])})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        "Routes: " + "; ".join(f"`{n}`: {r['description']}" for n, r in rows.items()) + ".",
        f"Speed: {results['speed_sentences']} dev sentences per batch size, median of "
        f"{results['repeats']} interleaved rounds in one process; (x int8) = per-round ratio "
        "against the shipped int8 graph. Batch invariance: 32 sentences alone vs in one batch "
        "of 32. Accuracy: cosine top-1 xx→en averaged over languages; Δ against fp32 in points; "
        "BUCC: mean oracle F1 with ratio margin.",
    ]
    return "\n".join(lines + notes)
