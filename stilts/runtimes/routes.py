"""CPU routes: the ways one model directory's graphs can run (runtime, graph, options).

A route is a name the ``--precision`` flag takes. The ONNX Runtime routes are the model's own
graphs (``q4``, ``int8``, ``fp32``); the OpenVINO routes compile the fp32 graph (``model.onnx``)
with OpenVINO's CPU plugin, in f32 or with ``INFERENCE_PRECISION_HINT=bf16`` (bf16 matrix
products where the CPU has them natively: AVX-512 BF16 or AMX). Dynamic int8 moves a text's vector
with its batch companions, so it can be asked for by name but never serves ``auto``
(``auto_eligible`` False); every other route serves ``auto`` only after passing the parity gate
(:mod:`stilts.encoding.autoroute`).

Each runtime is wrapped in a small runner with the same three members (``input_names``,
``provider``, ``run(feeds)``), so the encoder does not care which one it holds.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path

import numpy as np

from stilts.manifest import GRAPHS
from stilts.runtimes.ortload import load_onnxruntime
from stilts.runtimes.ovcache import page_out
from stilts.runtimes.ovcompact import compact_enabled, compact_word_table
from stilts.runtimes.ovload import load_openvino, openvino_available

LOG = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"


@dataclasses.dataclass(frozen=True)
class CpuRoute:
    """One way to run a model on a CPU.

    Attributes:
        name: what ``--precision`` takes.
        runtime: ``onnxruntime`` or ``openvino``.
        graph: the precision whose file of the model directory is run (``GRAPHS`` key).
        hint: OpenVINO's ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16``).
        bf16: computes in bf16: only a CPU with native bf16 may choose it for ``auto``.
        auto_eligible: may serve ``auto`` once it passes the parity gate.
        description: one line for reports.
    """

    name: str
    runtime: str
    graph: str
    hint: str | None = None
    bf16: bool = False
    auto_eligible: bool = True
    description: str = ""


ROUTES: dict[str, CpuRoute] = {
    r.name: r
    for r in (
        CpuRoute(
            "q4", ONNXRUNTIME, "q4", description="onnxruntime, fused graph, 4-bit block weights"
        ),
        CpuRoute(
            "int8",
            ONNXRUNTIME,
            "int8",
            auto_eligible=False,
            description="onnxruntime, dynamic int8 (moves with the batch: by name only)",
        ),
        CpuRoute("fp32", ONNXRUNTIME, "fp32", description="onnxruntime, the fp32 graph"),
        CpuRoute(
            "ov-f32", OPENVINO, "fp32", hint="f32", description="OpenVINO CPU, fp32 graph, f32"
        ),
        CpuRoute(
            "ov-bf16",
            OPENVINO,
            "fp32",
            hint="bf16",
            bf16=True,
            description="OpenVINO CPU, fp32 graph, INFERENCE_PRECISION_HINT=bf16",
        ),
    )
}


def route_graph(route: CpuRoute, model_dir: Path) -> Path:
    """The file of ``model_dir`` the route runs."""
    return Path(model_dir) / GRAPHS[route.graph]


def runtime_available(runtime: str) -> bool:
    """Whether ``runtime`` can be imported here (onnxruntime always can: it is a dependency)."""
    if runtime == OPENVINO:
        return openvino_available()
    return True


class OrtRunner:
    """An ONNX Runtime session (CPU, or CUDA first when ``providers`` says so)."""

    def __init__(self, graph: Path, threads: int, spin: bool, providers: list[str]):
        ort = load_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.session = ort.InferenceSession(str(graph), sess_options=opts, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (emb,) = self.session.run(["embedding"], feeds)
        return emb


class OvRunner:
    """An OpenVINO model compiled for the CPU plugin (telemetry off, see :mod:`stilts.runtimes.ovload`).

    With ``cache`` (:mod:`stilts.runtimes.ovcache`) the compiled model is imported from
    ``$STILTS_HOME/ov-cache`` when a checked entry is there (``blob``, already verified), else
    compiled from ``graph`` (its word table made compact where exact:
    :mod:`stilts.runtimes.ovcompact`) and exported there. ``before_compile`` runs before the graph
    is read (the session's checksum of it). ``cached`` says which happened: ``hit``, ``miss``
    (compiled and stored) or ``off``.

    One infer request, used under a lock: OpenVINO's requests are not thread-safe (ONNX Runtime's
    ``run`` is), and the server's batcher and a direct caller may share an encoder.
    """

    def __init__(
        self,
        graph: Path,
        threads: int,
        hint: str,
        cache=None,
        blob: np.ndarray | None = None,
        before_compile=None,
    ):
        ov = load_openvino()
        core = ov.Core()
        config = ov_config(threads, hint)
        self.compiled = None
        self.cached = "off" if cache is None else "miss"
        if blob is not None:
            try:
                # the weights stay in the (private, read-only in effect) map: keep it alive
                self.compiled = core.import_model(
                    ov.Tensor(blob, shared_memory=True), "CPU", config
                )
                self._blob = blob
                self.cached = "hit"
            except Exception as e:  # an entry that checks out but will not import: rebuild it
                LOG.warning(
                    "%s: compiled model did not import (%s); compiling again", cache.blob, e
                )
                cache.discard()
            else:
                page_out(blob)  # the plugin holds its own copies of the layer weights
        if self.compiled is None:
            if before_compile is not None:
                before_compile()
            model = core.read_model(str(graph))
            if compact_enabled() and compact_word_table(model, ov):
                LOG.debug("%s: word table compacted to 4 bits (exact)", graph)
            self.compiled = core.compile_model(model, "CPU", config)
            del model
            if cache is not None:
                try:
                    cache.save(self.compiled.export_model().getbuffer())
                except OSError as e:  # a read-only or full cache: compile again next time
                    LOG.warning("%s: could not cache the compiled model (%s)", cache.blob, e)
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.provider = f"OpenVINO-CPU-{hint}"
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        with self._lock:
            self._request.infer(feeds)
            return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)


def ov_config(threads: int, hint: str) -> dict:
    """The properties an OpenVINO route compiles with (part of its cache key)."""
    return {
        "INFERENCE_PRECISION_HINT": hint,
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        # leave the scheduling of threads to the OS, as onnxruntime does with spinning off:
        # the gRPC threads and other processes need the same cores
        "ENABLE_CPU_PINNING": False,
    }


def make_runner(
    route: CpuRoute,
    graph: Path,
    threads: int,
    spin: bool,
    providers: list[str],
    cache=None,
    blob: np.ndarray | None = None,
    before_compile=None,
):
    """The runner of ``route`` for ``graph`` (``cache``, ``blob``, ``before_compile``: OpenVINO
    routes only, see :class:`OvRunner`).

    Raises:
        ImportError: the route's runtime is not installed.
    """
    if route.runtime == OPENVINO:
        return OvRunner(graph, threads, route.hint or "f32", cache, blob, before_compile)
    return OrtRunner(graph, threads, spin, providers)


def default_threads(threads: int | None) -> int:
    """``threads``, else ``STILTS_THREADS``, else every core."""
    return threads or int(os.environ.get("STILTS_THREADS", "0")) or os.cpu_count() or 1
