"""One route of one model directory, loaded: its tokenizer and the runner of its graph.

A :class:`RouteSession` is everything :class:`stilts.Encoder` does once a route is chosen:
tokenise with the manifest's prefixes, pad and batch, run the graph. It makes no choice and
resolves no name, so route measurement (:mod:`stilts.encoding.autoroute`) runs on sessions, and
the encoder, which asks that measurement for its ``auto`` route, is built on top of both.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stilts.encoding.tokenizer import load_tokenizer
from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import PROMPT_LENGTH, TOKENIZER_NAME, Manifest, data_name, graph_files
from stilts.runtimes.batching import length_batches
from stilts.runtimes.ortload import load_onnxruntime
from stilts.runtimes.ovcache import cache_enabled, cache_entry
from stilts.runtimes.ovload import load_openvino
from stilts.runtimes.routes import OPENVINO, ROUTES, make_runner, ov_config, route_graph

LOG = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
# OpenVINO routes pad each row to the next multiple of this many tokens (see RouteSession)
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


def cuda_build_installed() -> bool:
    """Whether the installed onnxruntime ships its CUDA provider library (GPU builds do, the CPU
    wheel does not), asked of its files so that a CPU process never imports onnxruntime for it
    (about 20 MB resident; the OpenVINO routes need none of it)."""
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return False
    return any((Path(spec.origin).parent / "capi").glob("*onnxruntime_providers_cuda*"))


def providers_for(device: str) -> list[str]:
    """ONNX Runtime's execution providers for ``device`` (``auto``: CUDA first when onnxruntime
    has it; ``cuda`` without it logs a warning and uses the CPU)."""
    if (
        device in ("auto", "cuda")
        and cuda_build_installed()
        and "CUDAExecutionProvider" in load_onnxruntime().get_available_providers()
    ):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        LOG.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider; using CPU")
    return ["CPUExecutionProvider"]


def default_spin(spin: bool | None) -> bool:
    """``spin``, else ``STILTS_ORT_SPIN``, else off."""
    if spin is None:
        return os.environ.get("STILTS_ORT_SPIN", "").lower() in ("1", "true", "yes")
    return spin


class RouteSession:
    """The route ``precision`` of the model directory ``path`` (manifest ``manifest``), loaded.

    Args:
        path: the model directory.
        manifest: its manifest.
        precision: a route name (:data:`stilts.runtimes.routes.ROUTES`).
        threads: intra-op threads.
        spin: let ONNX Runtime's pool threads spin-wait between runs.
        providers: ONNX Runtime's execution providers (:func:`providers_for`).
        graph: another ONNX graph of this model to run instead of the route's file.
        verify: check the graph's (its weights file's too, when it has one) and the tokenizer's
            SHA-256 against the manifest first (streamed: a file is never held in memory).

    Raises:
        StiltsError: NOT_FOUND for a missing graph, FAILED_PRECONDITION for a file that differs
            from its manifest.
        ImportError: the route's runtime is not installed.
    """

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        precision: str,
        threads: int,
        spin: bool,
        providers: list[str],
        graph: str | os.PathLike | None = None,
        verify: bool = True,
    ):
        self.path = path
        self.manifest = manifest
        route = ROUTES[precision]
        graph_path = Path(graph) if graph is not None else route_graph(route, path)
        if not graph_path.is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND, f"{graph_path}: missing from the model directory"
            )
        own = [graph_path.name] if graph_path.parent == path else []
        # OpenVINO: the compiled model cached for this graph, route, CPU and version, checked
        # (its checksum stands in for the graph's: stilts.runtimes.ovcache)
        cache = self._ov_cache(manifest, route, own, threads) if route.runtime == OPENVINO else None
        blob = cache.load() if cache is not None else None
        if verify:
            manifest.verify_files(path, [*(own if blob is None else []), TOKENIZER_NAME])
        self.runner = make_runner(
            route,
            graph_path,
            threads,
            spin,
            providers,
            cache=cache,
            blob=blob,
            before_compile=(lambda: manifest.verify_files(path, own)) if verify and own else None,
        )
        self.precision = precision
        self.route = route
        self.threads = threads
        # the onnxruntime session (None on OpenVINO routes)
        self.session = getattr(self.runner, "session", None)
        self.graph = graph_path
        # the graph and, for a model over the protobuf limit, its weights file beside it
        self.graph_bytes = sum(
            p.stat().st_size
            for p in (graph_path.parent / n for n in graph_files(graph_path.name))
            if p.is_file()
        )
        self.provider = self.runner.provider
        # OpenVINO's CPU kernels block the attention over the padded length: a row's vector moves
        # with the padding its batch gives it (bf16: up to 5e-4 on dev sentences, f32: 1e-7),
        # while the batch size and the other rows change nothing. So on OpenVINO each row is
        # padded by its own length only, to the next multiple of LENGTH_BUCKET, and a graph call
        # holds rows of one bucket: batch-invariant to 0.0.
        self.length_bucket = LENGTH_BUCKET if route.runtime == OPENVINO else 0

        self.tokenizer = load_tokenizer(path / TOKENIZER_NAME, manifest.max_len)
        pad = self.tokenizer.token_id("<pad>")
        self.pad_id = 0 if pad is None else pad
        self.max_chars = max(4096, manifest.max_len * 32)
        self.takes_prompt_length = PROMPT_LENGTH in self.runner.input_names
        self._prompt_lens: dict[str, int] = {}
        self.truncated_total = 0

    @staticmethod
    def _ov_cache(manifest: Manifest, route, own: list[str], threads: int):
        """The compiled-model cache entry for the model's own graph (None: another graph, one the
        manifest records no SHA-256 for, or ``STILTS_OV_CACHE=0``)."""
        graph_sha = manifest.files.get(own[0]) if own else None
        weights_sha = manifest.files.get(data_name(own[0])) if own else None
        if graph_sha and weights_sha:  # the graph's weights file beside it
            graph_sha += "+" + weights_sha
        if not graph_sha or not cache_enabled():
            return None
        return cache_entry(
            manifest.name,
            manifest.fingerprint,
            graph_sha,
            route.name,
            ov_config(threads, route.hint or "f32"),
            load_openvino().get_version(),
        )

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
                [(ids, _)] = self.tokenizer.encode_batch([self.prepare(prefix)])
                n = len(ids) - (1 if ids and ids[-1] in self.tokenizer.special_ids else 0)
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
        return [
            Tokenized(np.asarray(ids, dtype=np.int64), overflow or c, prompt_len)
            for (ids, overflow), c in zip(self.tokenizer.encode_batch(prepared), cut, strict=True)
        ]

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
