"""The encoder contract: what a model directory holds and what its manifest ``stilts.json`` says.

A model directory::

    model.onnx        fp32 graph: (input_ids, attention_mask) -> embedding (pooled, L2-normalised
                      unless the manifest says otherwise); a graph that pools without its prompt
                      takes a third input, prompt_length (int64, one per row)
    model.q4.onnx     the same graph, fused, 4-bit block weights (CPU default; absent in old dirs)
    model.int8.onnx   the same graph, int8 dynamic quantisation (CPU)
    tokenizer.json    a Hugging Face ``tokenizers`` file
    stilts.json       this manifest

The fp32 graph keeps its weights in ONNX's external-data format: ``model.onnx`` (nodes, small
tensors) plus ``model.onnx.data`` beside it, which the runtimes map instead of copying (one copy of
the weights per process; :mod:`stilts.graphs.onnxfile`). A model whose fp32 weights pass the
protobuf limit (about 2 GiB) has every graph in that format (``model.q4.onnx.data``,
``model.int8.onnx.data`` likewise). The manifest lists and checksums every file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write_text
from stilts.records import TEXT_KINDS

MANIFEST_NAME = "stilts.json"
FP32_NAME = "model.onnx"
INT8_NAME = "model.int8.onnx"
Q4_NAME = "model.q4.onnx"
# Precision -> graph file. Order: the CPU preference among those a directory holds.
GRAPHS = {"q4": Q4_NAME, "int8": INT8_NAME, "fp32": FP32_NAME}
TOKENIZER_NAME = "tokenizer.json"
# A graph's weights file in ONNX's external-data format: the graph's name plus this.
DATA_SUFFIX = ".data"
# The graph input of models that pool without their prompt (include_prompt False).
PROMPT_LENGTH = "prompt_length"
FORMAT_VERSION = 1
# Raised when the export builds a model's graphs differently (2: q4 with fp32 activations when its
# int8 ones miss the auto-route gate; 3: the fp32 graph's weights in a file beside it, mapped by the
# runtimes); ``parity["export_revision"]`` records it, and an install by name rebuilds a model an
# older export built (its fp32 tensors, so its fingerprint, are unchanged).
EXPORT_REVISION = 3


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_name(graph_name: str) -> str:
    """The weights file of a graph written with external data: ``model.onnx`` -> ``model.onnx.data``."""
    return graph_name + DATA_SUFFIX


def graph_files(graph_name: str) -> list[str]:
    """The files a graph may consist of: the graph and its weights file (when it has one)."""
    return [graph_name, data_name(graph_name)]


def available_precisions(model_dir: str | os.PathLike) -> list[str]:
    """The precisions whose graph a model directory holds, in ``GRAPHS`` order."""
    return [p for p, name in GRAPHS.items() if (Path(model_dir) / name).is_file()]


@dataclasses.dataclass
class Manifest:
    """What an encoder is and how it must be used.

    Attributes:
        name: model name, e.g. ``multilingual-e5-small``.
        dim: embedding dimension.
        max_len: longest token sequence the encoder reads (longer inputs are truncated, counted).
        pooling: ``mean`` (masked mean over all tokens), ``cls`` (first token), or any
            sentence-transformers pooling mode(s), joined by ``+`` in concatenation order.
        layer: which hidden layer is pooled, counting the embedding output as 0.
        num_layers: layers of the source checkpoint.
        normalize: whether the graph L2-normalises its output.
        prefixes: text prepended per kind of text (``query``, ``passage``, ``bitext``).
        source: where the weights come from (checkpoint, packages, hashes).
        license: licence of the weights.
        files: sha256 per file of the directory.
        parity: the export's parity figures (per precision, against the fp32 graph).
        cpu_precision: the graph CPU encoders load when no precision is asked for (None, in
            directories written before it existed: the first of ``GRAPHS`` that is present).
        training: tasks, steps and data files when the encoder was STILTs-trained.
        strip: the encoder strips surrounding whitespace from prefix + text before tokenising.
        lowercase: the encoder lowercases prefix + text before tokenising.
        include_prompt: False: the graph leaves the prefix's tokens out of the pooling (its
            ``prompt_length`` input, which the encoder fills per text).
        similarity: the similarity the model was trained for (``cosine``, ``dot``,
            ``euclidean``, ``manhattan``); stilts indices rank by cosine.
        sentence_transformers: for an imported sentence-transformers model: its modules,
            prompts, default prompt name and which prompt each text kind uses.
        weights_sha256: sha256 of the fp32 graph as one protobuf file, for a model under the
            protobuf limit whose directory holds that graph with its weights beside it: the
            fingerprint reads it, so the layout does not change the model's vector space
            (None: the fingerprint hashes the files as they are).
    """

    name: str
    dim: int
    max_len: int
    pooling: str = "mean"
    layer: int = -1
    num_layers: int = 0
    normalize: bool = True
    prefixes: dict[str, str] = dataclasses.field(
        default_factory=lambda: {"query": "", "passage": "", "bitext": ""}
    )
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    license: str = "unknown"
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    parity: dict[str, Any] = dataclasses.field(default_factory=dict)
    cpu_precision: str | None = None
    training: dict[str, Any] | None = None
    strip: bool = False
    lowercase: bool = False
    include_prompt: bool = True
    similarity: str = "cosine"
    sentence_transformers: dict[str, Any] | None = None
    weights_sha256: str | None = None
    format: int = FORMAT_VERSION

    def prefix(self, kind: str) -> str:
        if kind not in TEXT_KINDS:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"kind must be one of {', '.join(TEXT_KINDS)}, got {kind!r}",
                field="kind",
            )
        return self.prefixes.get(kind, "")

    @property
    def fingerprint(self) -> str:
        """Identifies the vector space: two encoders with the same fingerprint give comparable vectors.

        fp32 and int8 graphs of one model share it (they differ only by quantisation noise).
        It hashes the fp32 graph as one file (``weights_sha256``, or ``model.onnx`` written so);
        a model over the protobuf limit, which never was one file, adds its weights file's hash.
        """
        weights = self.weights_sha256 or self.files.get(FP32_NAME, "")
        if not self.weights_sha256 and self.files.get(data_name(FP32_NAME)):
            weights += "+" + self.files[data_name(FP32_NAME)]
        key = json.dumps(
            {
                "name": self.name,
                "dim": self.dim,
                "pooling": self.pooling,
                "layer": self.layer,
                "weights": weights,
            },
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def default_precision(self, model_dir: str | os.PathLike, on_gpu: bool = False) -> str:
        """The precision to load when none is asked for: fp32 on a GPU, else ``cpu_precision``
        or, for older directories, the first graph of ``GRAPHS`` present in ``model_dir``."""
        if on_gpu:
            return "fp32"
        if self.cpu_precision:
            return self.cpu_precision
        return next((p for p in available_precisions(model_dir)), "fp32")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"name", "dim", "max_len"} - data.keys()
        if missing:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"manifest lacks required keys: {', '.join(sorted(missing))}",
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, model_dir: str | os.PathLike) -> Path:
        path = Path(model_dir) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> Manifest:
        path = Path(model_dir) / MANIFEST_NAME
        if not path.is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND, f"{path}: no {MANIFEST_NAME}; not a stilts model directory"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StiltsError(ErrorCode.FAILED_PRECONDITION, f"{path}: invalid JSON: {e}") from e
        return cls.from_dict(data)

    def record_files(self, model_dir: str | os.PathLike) -> None:
        """Hash every contract file present in ``model_dir`` into ``files`` (graphs, their
        weights files, the tokenizer), streaming each file."""
        d = Path(model_dir)
        names = [f for g in GRAPHS.values() for f in graph_files(g)] + [TOKENIZER_NAME]
        self.files = {n: sha256_file(d / n) for n in names if (d / n).is_file()}

    def verify_files(self, model_dir: str | os.PathLike, names: list[str] | None = None) -> None:
        """Check sha256 of the named files (default all recorded; a graph's name covers its
        weights file too); raise on mismatch or on a recorded file that is missing."""
        d = Path(model_dir)
        wanted = names or list(self.files)
        wanted = [*wanted, *(data_name(n) for n in wanted if data_name(n) not in wanted)]
        for n in wanted:
            want = self.files.get(n)
            if want is None:
                continue
            if not (d / n).is_file():
                raise StiltsError(
                    ErrorCode.NOT_FOUND,
                    f"{d / n}: missing from the model directory (the manifest lists it)",
                    "model",
                )
            got = sha256_file(d / n)
            if got != want:
                raise StiltsError(
                    ErrorCode.FAILED_PRECONDITION,
                    f"{d / n}: sha256 {got[:12]}... does not match the manifest ({want[:12]}...)",
                )
