"""``stilts.Encoder``: sentence embeddings from an ONNX model directory (no torch)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import (
    GRAPHS,
    PROMPT_LENGTH,
    TOKENIZER_NAME,
    Manifest,
    available_precisions,
)
from stilts.models import resolve
from stilts.ortload import load_onnxruntime
from stilts.runtimes import OPENVINO, ROUTES, default_threads, make_runner, route_graph

LOG = logging.getLogger(__name__)

PRECISIONS = tuple(GRAPHS)
# Every CPU route by name: the model's graphs on onnxruntime, and the OpenVINO routes.
ROUTE_NAMES = tuple(ROUTES)
# What the CLIs offer: ``auto`` loads the route measured fastest on this CPU among those passing the
# parity gate (:mod:`stilts.autoroute`), fp32 on a GPU.
PRECISION_CHOICES = ("auto", *ROUTE_NAMES)
DEVICES = ("auto", "cpu", "cuda")
WORKLOADS = ("batch", "serve")
# OpenVINO routes pad each row to the next multiple of this many tokens (see Encoder.__init__)
LENGTH_BUCKET = 8


@dataclasses.dataclass
class Tokenized:
    """One text after tokenisation: its ids, whether it was cut to ``max_len``, and how many of
    its first tokens are the prompt (prefix) a graph with ``include_prompt`` False leaves out of
    the pooling."""

    ids: np.ndarray
    truncated: bool
    prompt_len: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def length_batches(
    lengths: Sequence[int], batch_size: int, max_tokens: int | None = None, bucket: int = 0
) -> Iterator[np.ndarray]:
    """Group item indices into batches of similar length (longest first).

    Each batch holds at most ``batch_size`` items and, when ``max_tokens`` is set, at most
    ``max_tokens`` padded tokens (items x longest); a single longer item still forms its own batch.
    ``bucket`` > 0: a batch holds items of one length bucket only (lengths rounded up to a
    multiple of ``bucket``: the routes that pad each row by its own length, see ``Encoder``).
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = batch_size
        if max_tokens:
            size = max(1, min(size, max_tokens // max(longest, 1)))
        if bucket:
            rest = -(-np.asarray(lengths)[order[start:]] // bucket)
            same = int(np.searchsorted(-rest, -rest[0], "right"))
            size = min(size, max(same, 1))
        yield order[start : start + size]
        start += size


def _available_providers() -> list[str]:
    ort = load_onnxruntime()

    return ort.get_available_providers()


class Encoder:
    """Encode sentences with a model that follows the stilts encoder contract.

    Args:
        path_or_name: an installed model name (``default``) or a model directory.
        precision: a route: ``q4``, ``int8``, ``fp32`` (onnxruntime) or ``ov-f32``, ``ov-bf16``
            (OpenVINO, optional extra); None (or ``auto``) picks fp32 on CUDA and on CPU the route
            measured fastest on this CPU among those passing the parity gate, measured on the
            first load on a CPU not seen before and recorded under ``$STILTS_HOME/cpu-routes``
            (:mod:`stilts.autoroute`). A chosen route whose runtime is missing degrades to the
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
        from tokenizers import Tokenizer

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
        self.path: Path = resolve(path_or_name)
        self.manifest = Manifest.load(self.path)
        providers = ["CPUExecutionProvider"]
        if device in ("auto", "cuda") and "CUDAExecutionProvider" in _available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif device == "cuda":
            LOG.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider; using CPU")
        on_gpu = providers[0] == "CUDAExecutionProvider"
        threads = default_threads(threads)
        if spin is None:
            spin = os.environ.get("STILTS_ORT_SPIN", "").lower() in ("1", "true", "yes")
        # auto on a CPU: the routes this CPU measured fastest first (the rest are fallbacks)
        candidates = [precision] if precision else self._auto_routes(on_gpu, workload, threads)
        for i, name in enumerate(candidates):
            route = ROUTES[name]
            path = Path(graph) if graph is not None else route_graph(route, self.path)
            if not path.is_file():
                raise StiltsError(ErrorCode.NOT_FOUND, f"{path}: missing from the model directory")
            if verify:
                own = [path.name] if path.parent == self.path else []
                self.manifest.verify_files(self.path, [*own, TOKENIZER_NAME])
            try:
                self.runner = make_runner(route, path, threads, spin, providers)
            except ImportError as e:
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
        self.precision = name
        self.route = route
        self.threads = threads
        # the onnxruntime session (None on OpenVINO routes)
        self.session = getattr(self.runner, "session", None)
        self.graph = path
        self.graph_bytes = path.stat().st_size
        self.provider = self.runner.provider
        # OpenVINO's CPU kernels block the attention over the padded length: a row's vector moves
        # with the padding its batch gives it (bf16: up to 5e-4 on dev sentences, f32: 1e-7),
        # while the batch size and the other rows change nothing. So on OpenVINO each row is
        # padded by its own length only, to the next multiple of LENGTH_BUCKET, and a graph call
        # holds rows of one bucket: batch-invariant to 0.0.
        self.length_bucket = LENGTH_BUCKET if route.runtime == OPENVINO else 0

        self.tokenizer = Tokenizer.from_file(str(self.path / TOKENIZER_NAME))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.manifest.max_len)
        pad = self.tokenizer.token_to_id("<pad>")
        self.pad_id = 0 if pad is None else pad
        self.max_chars = max(4096, self.manifest.max_len * 32)
        self.takes_prompt_length = PROMPT_LENGTH in self.runner.input_names
        self._prompt_lens: dict[str, int] = {}
        self.truncated_total = 0
        self.load_seconds = time.perf_counter() - t0
        LOG.info(
            "loaded %s (%s, %s, %d threads) in %.2fs",
            self.manifest.name,
            self.precision,
            self.provider,
            threads,
            self.load_seconds,
        )

    def _auto_routes(self, on_gpu: bool, workload: str, threads: int) -> list[str]:
        """``auto``: fp32 on a GPU (the CUDA path keeps priority); on a CPU the routes in the
        order this CPU measured them for ``workload`` (measured now when the CPU is new)."""
        if on_gpu:
            return [self.manifest.default_precision(self.path, on_gpu=True)]
        from stilts.autoroute import ranked_routes

        ranked, overhead = ranked_routes(self.path, self.manifest, workload, threads)
        self.auto_overhead_tokens = overhead
        return ranked

    @property
    def call_overhead_tokens(self) -> float | None:
        """The fixed cost of one graph call in padded tokens, as measured for the ``auto`` choice
        of this route on this CPU (None when not measured: the batcher keeps its default)."""
        return getattr(self, "auto_overhead_tokens", {}).get(self.precision)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def max_len(self) -> int:
        return self.manifest.max_len

    def prepare(self, text: str) -> str:
        """A text as the tokenizer gets it: stripped and lowercased when the manifest says so
        (sentence-transformers models: after the prompt is prepended)."""
        if self.manifest.strip:
            text = text.strip()
        return text.lower() if self.manifest.lowercase else text

    def prompt_length(self, kind: str) -> int:
        """Tokens of ``kind``'s prefix as sentence-transformers counts a prompt: the prefix
        tokenised alone, less a trailing special token (0 without a prefix)."""
        if kind not in self._prompt_lens:
            prefix = self.manifest.prefix(kind)
            n = 0
            if prefix:
                ids = self.tokenizer.encode(self.prepare(prefix)).ids
                special = {
                    i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special
                }
                n = len(ids) - (1 if ids and ids[-1] in special else 0)
            self._prompt_lens[kind] = n
        return self._prompt_lens[kind]

    def tokenize(self, texts: Sequence[str], kind: str = "query") -> list[Tokenized]:
        """Tokenise with the manifest's prefix for ``kind``; inputs longer than max_len are cut.

        Raises:
            StiltsError: INVALID_ARGUMENT when an item is not a string.
        """
        prefix = self.manifest.prefix(kind)
        prompt_len = self.prompt_length(kind) if self.takes_prompt_length else 0
        prepared = []
        cut = []
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"texts[{i}] must be a string, got {type(t).__name__}",
                    "texts",
                )
            # A token covers at least one character, so cutting far beyond max_len tokens
            # changes nothing the model sees but bounds the tokeniser's work on huge inputs.
            cut.append(len(t) > self.max_chars)
            prepared.append(self.prepare(prefix + (t[: self.max_chars] if cut[-1] else t)))
        encodings = self.tokenizer.encode_batch(prepared, add_special_tokens=True)
        out = [
            Tokenized(np.asarray(e.ids, dtype=np.int64), bool(e.overflowing) or c, prompt_len)
            for e, c in zip(encodings, cut, strict=True)
        ]
        return out

    def padded_length(self, n: int) -> int:
        """The length a row of ``n`` tokens is padded to at least: ``n``, or on routes with a
        length bucket the next multiple of it (never past ``max_len`` unless ``n`` is)."""
        if not self.length_bucket:
            return n
        return max(n, min(-(-n // self.length_bucket) * self.length_bucket, self.max_len))

    def batch_feeds(self, items: Sequence[Tokenized]) -> dict[str, np.ndarray]:
        """The graph's inputs for one batch: ids right-padded to the longest, the attention mask
        and, for graphs that pool without their prompt, each row's prompt length."""
        longest = self.padded_length(max(len(t) for t in items))
        ids = np.full((len(items), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(items), longest), dtype=np.int64)
        for row, t in enumerate(items):
            ids[row, : len(t)] = t.ids
            mask[row, : len(t)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.takes_prompt_length:
            feeds[PROMPT_LENGTH] = np.array([t.prompt_len for t in items], dtype=np.int64)
        return feeds

    def embed_tokenized(self, items: Sequence[Tokenized]) -> np.ndarray:
        """Run one padded batch through the graph; rows follow ``items``."""
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        padded = [self.padded_length(len(t)) for t in items]
        if self.length_bucket and len(set(padded)) > 1:  # one call per bucket
            out = np.empty((len(items), self.dim), dtype=np.float32)
            for n in set(padded):
                rows = [i for i, p in enumerate(padded) if p == n]
                out[rows] = self.runner.run(self.batch_feeds([items[i] for i in rows]))
            return out
        emb = self.runner.run(self.batch_feeds(items))
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode(
        self,
        texts: Sequence[str],
        kind: str = "query",
        batch_size: int = 32,
        max_tokens: int | None = None,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed ``texts``; row i of the result is the embedding of ``texts[i]``.

        Texts are sorted by token length and each batch is padded only to its own longest item.
        Inputs longer than ``max_len`` tokens are truncated (counted in ``truncated_total`` and
        ``last_truncated``); an empty string gets the embedding of the bare prefix.

        Args:
            texts: the sentences.
            kind: ``query``, ``passage`` or ``bitext`` (selects the manifest's prefix).
            batch_size: most sentences per batch.
            max_tokens: most padded tokens per batch (None: no bound beyond batch_size).
            progress: show a tqdm bar.

        Returns:
            float32 array of shape (len(texts), dim), L2-normalised when the manifest says so.
        """
        if isinstance(texts, str):
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, "texts must be a list of strings, not a string", "texts"
            )
        if batch_size < 1:
            raise StiltsError(ErrorCode.INVALID_ARGUMENT, "batch_size must be >= 1", "batch_size")
        toks = self.tokenize(texts, kind)
        self.last_truncated = sum(t.truncated for t in toks)
        self.truncated_total += self.last_truncated
        out = np.empty((len(toks), self.dim), dtype=np.float32)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(toks), desc="encode", unit="sent")
        lengths = [len(t) for t in toks]
        for idx in length_batches(lengths, batch_size, max_tokens, self.length_bucket):
            out[idx] = self.embed_tokenized([toks[i] for i in idx])
            if bar is not None:
                bar.update(len(idx))
        if bar is not None:
            bar.close()
        return out

    def __repr__(self) -> str:
        return (
            f"Encoder({self.manifest.name!r}, dim={self.dim}, precision={self.precision!r}, "
            f"provider={self.provider!r})"
        )


def encoders_by_precision(model: str | os.PathLike = "default", **kwargs) -> dict[str, Encoder]:
    """One :class:`Encoder` per graph the model directory holds (``q4``, ``int8``, ``fp32``)."""
    path = resolve(model)
    return {p: Encoder(path, precision=p, **kwargs) for p in available_precisions(path)}


def available_routes(model: str | os.PathLike = "default") -> list[str]:
    """The CPU routes that can run here for a model: its graphs on onnxruntime, and the OpenVINO
    routes when OpenVINO is installed."""
    from stilts.runtimes import runtime_available

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
