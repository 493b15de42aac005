"""Load the tasks of a run: resolve files, read examples, tokenize into features."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import sha256_file
from stilts.training.features import DOC_STRIDE, featurize, tag_vocabulary
from stilts.training.tasks import TAGGING, TaskSpec, resolve_files
from stilts.training.text import TextTokenizer

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class TaskData:
    """One task of a run, ready for training and evaluation.

    Attributes:
        spec: the registry entry.
        labels: class or tag labels (index = head output).
        train_files: the files read for training.
        dev_files: the files read for evaluation ([] when the task has no dev data).
        train_features: tokenized training features.
        dev_examples: dev examples (needed to score spans and tags).
        dev_features: tokenized dev features.
        n_train_examples: training examples read (SQuAD windows make features >= examples).
    """

    spec: TaskSpec
    labels: list[str]
    train_files: list[Path]
    dev_files: list[Path]
    train_features: list
    dev_examples: list
    dev_features: list
    n_train_examples: int

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_labels(self) -> int:
        return max(len(self.labels), 1)


def read_examples(spec: TaskSpec, files: Sequence[Path], limit: int | None = None) -> list:
    """All examples of ``files`` in order (the first ``limit`` when given)."""
    stream: Iterator[Any] = itertools.chain.from_iterable(spec.reader(f) for f in files)
    if limit:
        stream = itertools.islice(stream, limit)
    examples = list(stream)
    if not examples:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{spec.name}: no examples in {', '.join(str(f) for f in files)}",
            field="data",
        )
    return examples


def describe_files(files: Sequence[Path], checksum: bool = True) -> list[dict[str, Any]]:
    """Path, size and sha256 of each data file (recorded in the manifest's ``training``)."""
    out = []
    for f in files:
        item: dict[str, Any] = {"path": str(Path(f).resolve()), "bytes": os.path.getsize(f)}
        if checksum:
            item["sha256"] = sha256_file(f)
        out.append(item)
    return out


def load_task(
    spec: TaskSpec,
    tok: TextTokenizer,
    data_dir: str | os.PathLike | None,
    max_len: int,
    train_overrides: Mapping[str, Sequence[Path]] | None = None,
    dev_overrides: Mapping[str, Sequence[Path]] | None = None,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    doc_stride: int = DOC_STRIDE,
    labels: Sequence[str] | None = None,
    prefix: str = "",
) -> TaskData:
    """Read and tokenize one task.

    Args:
        labels: tag labels to use (a resumed run passes the saved ones); default: from the data.
        prefix: text prepended to each side of bitext pairs (the manifest's ``bitext`` prefix).

    Raises:
        StiltsError: missing or malformed files (naming them), no examples.
    """
    train_files = resolve_files(spec, "train", data_dir, train_overrides)
    dev_files = resolve_files(spec, "dev", data_dir, dev_overrides, required=False)
    LOG.info("%s: reading %s", spec.name, ", ".join(str(f) for f in train_files))
    train = read_examples(spec, train_files, max_train_examples)
    dev = read_examples(spec, dev_files, max_eval_examples) if dev_files else []
    if not dev_files:
        LOG.warning("%s: no dev data found; the task is trained but not evaluated", spec.name)
    if labels is None:
        labels = tag_vocabulary(train) if spec.kind == TAGGING else list(spec.labels)
    labels = list(labels)
    train_features = featurize(spec, train, tok, labels, max_len, doc_stride, prefix)
    dev_features = featurize(spec, dev, tok, labels, max_len, doc_stride, prefix) if dev else []
    LOG.info(
        "%s: %d train examples (%d features), %d dev examples",
        spec.name,
        len(train),
        len(train_features),
        len(dev),
    )
    return TaskData(
        spec, labels, train_files, dev_files, train_features, dev, dev_features, len(train)
    )
