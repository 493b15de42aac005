"""``stilts.Encoder``: sentence embeddings from an ONNX model directory (no torch).

The encoder resolves a model name under the home (:mod:`stilts.home`), chooses its route (a name,
or ``auto``: :mod:`stilts.encoding.autoroute`) and loads it as a
:class:`~stilts.encoding.session.RouteSession`, whose tokenising and batching it inherits.
"""

from __future__ import annotations

import logging
import os
import time

from stilts.encoding.autoroute import ranked_routes
from stilts.encoding.session import DEVICES, RouteSession, default_spin, providers_for
from stilts.errors import ErrorCode, StiltsError
from stilts.home import resolve
from stilts.manifest import Manifest
from stilts.runtimes.routes import ROUTES, default_threads, route_graph, runtime_available

LOG = logging.getLogger(__name__)

# Every CPU route by name: the model's graphs on onnxruntime, and the OpenVINO routes.
ROUTE_NAMES = tuple(ROUTES)
# What the CLIs offer: ``auto`` loads the route measured fastest on this CPU among those passing the
# parity gate (:mod:`stilts.encoding.autoroute`), fp32 on a GPU.
PRECISION_CHOICES = ("auto", *ROUTE_NAMES)
WORKLOADS = ("batch", "serve")


class Encoder(RouteSession):
    """Encode sentences with a model that follows the stilts encoder contract.

    Args:
        path_or_name: an installed model name (``default``) or a model directory.
        precision: a route: ``q4``, ``int8``, ``fp32`` (onnxruntime) or ``ov-f32``, ``ov-bf16``
            (OpenVINO, optional extra); None (or ``auto``) picks fp32 on CUDA and on CPU the route
            measured fastest on this CPU among those passing the parity gate, measured on the
            first load on a CPU not seen before and recorded under ``$STILTS_HOME/cpu-routes``
            (:mod:`stilts.encoding.autoroute`). A chosen route whose runtime is missing degrades to the
            next one, with one log line.
        device: ``auto`` (CUDA when onnxruntime has it, else CPU), ``cpu`` or ``cuda``.
        threads: intra-op threads; None reads ``STILTS_THREADS``, else all cores.
        verify: check the graph's and the tokenizer's SHA-256 against the manifest before loading
            (FAILED_PRECONDITION naming a file that differs). On by default: it costs a read of
            the files, measured in README "Operations".
        spin: let ONNX Runtime's pool threads spin-wait between runs. None reads
            ``STILTS_ORT_SPIN``, else off: spinning wins a little on an idle dedicated machine but
            burns the time slices other threads (gRPC, a second process) need; measured on 2 busy
            cores, turning it off made offline encoding 1.7-1.9x faster.
        graph: another ONNX graph of this model (same inputs and output) to run instead of the
            precision's file, e.g. a candidate quantisation (``stilts bench routes``).
        workload: what ``auto`` chooses for: ``batch`` (large batches: encode, mine, indexing)
            or ``serve`` (the small dynamic batches of a server); each has its own winner.

    Example:
        >>> enc = Encoder("default")
        >>> vecs = enc.encode(["Guten Morgen", "Good morning"], kind="bitext")
    """

    def __init__(
        self,
        path_or_name: str | os.PathLike = "default",
        precision: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        verify: bool = True,
        spin: bool | None = None,
        graph: str | os.PathLike | None = None,
        workload: str = "batch",
    ):
        t0 = time.perf_counter()
        if device not in DEVICES:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"device must be one of {DEVICES}", "device"
            )
        if precision == "auto":
            precision = None
        if precision is not None and precision not in ROUTES:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"precision must be one of {('auto', *ROUTE_NAMES)}, got {precision!r}",
                "precision",
            )
        if workload not in WORKLOADS:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"workload must be one of {WORKLOADS}", "workload"
            )
        path = resolve(path_or_name)
        manifest = Manifest.load(path)
        providers = providers_for(device)
        on_gpu = providers[0] == "CUDAExecutionProvider"
        threads = default_threads(threads)
        spin = default_spin(spin)
        # auto on a CPU: the routes this CPU measured fastest first (the rest are fallbacks)
        candidates = (
            [precision]
            if precision
            else self._auto_routes(path, manifest, on_gpu, workload, threads)
        )
        for i, name in enumerate(candidates):
            try:
                super().__init__(path, manifest, name, threads, spin, providers, graph, verify)
            except ImportError as e:
                route = ROUTES[name]
                if i + 1 == len(candidates):
                    raise StiltsError(
                        ErrorCode.FAILED_PRECONDITION,
                        f"route {name!r} needs {route.runtime}, which is not installed ({e}); "
                        f"install it (pip install 'stilts[{route.runtime}]') or choose another "
                        "--precision",
                        "precision",
                    ) from e
                LOG.warning(
                    "route %s: %s is not installed (%s); using %s instead",
                    name,
                    route.runtime,
                    e,
                    candidates[i + 1],
                )
                continue
            break
        self.load_seconds = time.perf_counter() - t0
        LOG.info(
            "loaded %s (%s, %s, %d threads) in %.2fs",
            self.manifest.name,
            self.precision,
            self.provider,
            threads,
            self.load_seconds,
        )

    def _auto_routes(
        self, path, manifest: Manifest, on_gpu: bool, workload: str, threads: int
    ) -> list[str]:
        """``auto``: fp32 on a GPU (the CUDA path keeps priority); on a CPU the routes in the
        order this CPU measured them for ``workload`` (measured now when the CPU is new)."""
        if on_gpu:
            return [manifest.default_precision(path, on_gpu=True)]
        ranked, overhead = ranked_routes(path, manifest, workload, threads)
        self.auto_overhead_tokens = overhead
        return ranked

    @property
    def call_overhead_tokens(self) -> float | None:
        """The fixed cost of one graph call in padded tokens, as measured for the ``auto`` choice
        of this route on this CPU (None when not measured: the batcher keeps its default)."""
        return getattr(self, "auto_overhead_tokens", {}).get(self.precision)

    def __repr__(self) -> str:
        return (
            f"Encoder({self.manifest.name!r}, dim={self.dim}, precision={self.precision!r}, "
            f"provider={self.provider!r})"
        )


def available_routes(model: str | os.PathLike = "default") -> list[str]:
    """The CPU routes that can run here for a model: its graphs on onnxruntime, and the OpenVINO
    routes when OpenVINO is installed."""
    path = resolve(model)
    return [
        n
        for n, r in ROUTES.items()
        if route_graph(r, path).is_file() and runtime_available(r.runtime)
    ]


def encoders_by_route(model: str | os.PathLike = "default", **kwargs) -> dict[str, Encoder]:
    """One :class:`Encoder` per route that runs here (:func:`available_routes`)."""
    path = resolve(model)
    return {r: Encoder(path, precision=r, **kwargs) for r in available_routes(path)}
