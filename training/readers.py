"""Readers for the official file formats of the nine STILTs intermediate tasks.

Each reader streams one file and yields examples (:mod:`stilts.training.examples`); a malformed
file raises :class:`~stilts.errors.StiltsError` naming the file and line (or, for one-document JSON
such as SQuAD, the JSON path of the bad item).

Formats:
    - NLI: MNLI / SNLI official jsonl (``sentence1``, ``sentence2``, ``gold_label``), ANLI official
      jsonl (``context``, ``hypothesis``, ``label`` e/n/c), the HF / jiant jsonl (``premise``,
      ``hypothesis``, ``label`` 0/1/2 or a string) and the GLUE tsv (``sentence1``, ``sentence2``,
      ``gold_label``).
    - QQP: the GLUE tsv (``question1``, ``question2``, ``is_duplicate``).
    - SQuAD v1.1 / v2.0: the official json (v2 with ``is_impossible``).
    - HellaSwag: official jsonl (``ctx_a``, ``ctx_b``, ``endings``, ``label``).
    - CosmosQA: official jsonl or csv (``context``, ``question``, ``answer0..3``, ``label``).
    - CommonsenseQA: official jsonl (``question.stem``, ``question.choices``, ``answerKey``).
    - CCG: one ``word<TAB>tag`` (or whitespace-separated) per line, a blank line between sentences.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.training.examples import ChoiceExample, PairExample, SpanExample, TaggingExample

LOG = logging.getLogger(__name__)

NLI_LABELS = ("entailment", "neutral", "contradiction")
QQP_LABELS = ("not_duplicate", "duplicate")
# HF datasets / jiant integer labels for NLI follow this order; ANLI uses e/n/c.
_NLI_ALIASES = {
    "entailment": "entailment",
    "neutral": "neutral",
    "contradiction": "contradiction",
    "e": "entailment",
    "n": "neutral",
    "c": "contradiction",
    "0": "entailment",
    "1": "neutral",
    "2": "contradiction",
}
# No gold label: MNLI/SNLI "-" (annotators disagreed), HF -1. Skipped, as in the official setups.
_NLI_NO_LABEL = {"-", "-1", ""}


def malformed(path: Path | str, where: int | str, message: str) -> StiltsError:
    """The error every reader raises: ``FILE:LINE: message``."""
    return StiltsError(ErrorCode.INVALID_ARGUMENT, f"{path}:{where}: {message}", field="data")


def _open(path: Path):
    if not path.is_file():
        raise StiltsError(ErrorCode.NOT_FOUND, f"{path}: no such data file", field="data")
    return path.open(encoding="utf-8", newline="")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a jsonl file."""
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise malformed(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
            if not isinstance(obj, dict):
                raise malformed(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_table(path: Path, delimiter: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a tsv/csv file with a header line.

    GLUE tsvs are read unquoted (their text contains bare quotes); csv files with standard quoting.
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with _open(path) as f:
        if delimiter == "\t":
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise malformed(path, 1, "empty file (a header line is expected)") from None
        header = [h.strip().lstrip("\ufeff") for h in header]
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise malformed(
                    path, lineno, f"expected {len(header)} columns as in the header, got {len(row)}"
                )
            yield lineno, dict(zip(header, row, strict=True))


def _field(path: Path, lineno: int | str, obj: dict, key: str, kind: type = str) -> Any:
    if key not in obj:
        raise malformed(path, lineno, f"missing field {key!r}")
    value = obj[key]
    if kind is str and not isinstance(value, str):
        raise malformed(path, lineno, f"field {key!r} must be a string, got {value!r}")
    return value


def _need_columns(path: Path, lineno: int, row: dict, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise malformed(path, lineno, f"missing column(s) {', '.join(missing)} in the header")


# ---- pair classification ----


def _nli_label(path: Path, lineno: int, raw: Any) -> str | None:
    key = str(raw).strip().lower()
    if key in _NLI_NO_LABEL:
        return None
    if key not in _NLI_ALIASES:
        raise malformed(
            path, lineno, f"label {raw!r} is not one of {', '.join(NLI_LABELS)} (or e/n/c, 0/1/2)"
        )
    return _NLI_ALIASES[key]


def read_nli(path: Path) -> Iterator[PairExample]:
    """MNLI / SNLI / ANLI in any of their official or common layouts (see module docstring)."""
    path = Path(path)
    skipped = 0
    if path.suffix == ".tsv":
        rows = read_table(path, "\t")
        for lineno, row in rows:
            _need_columns(path, lineno, row, ("sentence1", "sentence2"))
            raw = row.get("gold_label", row.get("label"))
            if raw is None:
                raise malformed(path, lineno, "missing column gold_label (or label) in the header")
            label = _nli_label(path, lineno, raw)
            if label is None:
                skipped += 1
                continue
            yield PairExample(f"{path.name}:{lineno}", row["sentence1"], row["sentence2"], label)
    else:
        for lineno, obj in read_jsonl(path):
            if "sentence1" in obj:  # MNLI / SNLI official
                a, b, raw = obj["sentence1"], obj.get("sentence2"), obj.get("gold_label")
                keys = ("sentence2", "gold_label")
            elif "context" in obj:  # ANLI official
                a, b, raw = obj["context"], obj.get("hypothesis"), obj.get("label")
                keys = ("hypothesis", "label")
            elif "premise" in obj:  # HF datasets / jiant
                a, b, raw = obj["premise"], obj.get("hypothesis"), obj.get("label")
                keys = ("hypothesis", "label")
            else:
                raise malformed(
                    path,
                    lineno,
                    "expected fields sentence1/sentence2/gold_label (MNLI, SNLI), "
                    "context/hypothesis/label (ANLI) or premise/hypothesis/label",
                )
            for k in keys:
                _field(path, lineno, obj, k, object)
            if not isinstance(a, str) or not isinstance(b, str):
                raise malformed(path, lineno, "premise and hypothesis must be strings")
            label = _nli_label(path, lineno, raw)
            if label is None:
                skipped += 1
                continue
            yield PairExample(f"{path.name}:{lineno}", a, b, label)
    if skipped:
        LOG.info("%s: skipped %d pairs without a gold label", path, skipped)


def read_qqp(path: Path) -> Iterator[PairExample]:
    """QQP from the GLUE tsv (``id qid1 qid2 question1 question2 is_duplicate``)."""
    path = Path(path)
    for lineno, row in read_table(path, "\t"):
        _need_columns(path, lineno, row, ("question1", "question2", "is_duplicate"))
        raw = row["is_duplicate"].strip()
        if raw not in ("0", "1"):
            raise malformed(path, lineno, f"is_duplicate must be 0 or 1, got {raw!r}")
        yield PairExample(
            f"{path.name}:{lineno}", row["question1"], row["question2"], QQP_LABELS[int(raw)]
        )


# ---- extractive QA ----


def read_squad(path: Path) -> Iterator[SpanExample]:
    """SQuAD v1.1 / v2.0 official json. Training answers whose offset does not match the context
    are dropped with a warning (never silently used at the wrong place)."""
    path = Path(path)
    with _open(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise malformed(path, e.lineno, f"invalid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise malformed(path, 1, "not a SQuAD file: expected an object with a 'data' list")
    bad_offsets = 0
    for i, article in enumerate(doc["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise malformed(path, f"data[{i}]", "missing 'paragraphs' list")
        for j, para in enumerate(paragraphs):
            where = f"data[{i}].paragraphs[{j}]"
            if not isinstance(para, dict):
                raise malformed(path, where, "expected an object")
            context = _field(path, where, para, "context")
            qas = _field(path, where, para, "qas", list)
            if not isinstance(qas, list):
                raise malformed(path, where, "'qas' must be a list")
            for k, qa in enumerate(qas):
                w = f"{where}.qas[{k}]"
                if not isinstance(qa, dict):
                    raise malformed(path, w, "expected an object")
                qid = str(_field(path, w, qa, "id", object))
                question = _field(path, w, qa, "question")
                raw_answers = qa.get("answers", [])
                if not isinstance(raw_answers, list):
                    raise malformed(path, w, "'answers' must be a list")
                if qa.get("is_impossible", False):
                    raw_answers = []
                elif not raw_answers:
                    raise malformed(path, w, "no answers and not marked is_impossible")
                answers = []
                for a_i, ans in enumerate(raw_answers):
                    aw = f"{w}.answers[{a_i}]"
                    if not isinstance(ans, dict):
                        raise malformed(path, aw, "expected an object")
                    text = _field(path, aw, ans, "text")
                    start = _field(path, aw, ans, "answer_start", object)
                    if not isinstance(start, int) or start < 0:
                        raise malformed(
                            path, aw, f"answer_start must be an int >= 0, got {start!r}"
                        )
                    if context[start : start + len(text)] != text:
                        bad_offsets += 1
                        continue
                    answers.append((text, start))
                if raw_answers and not answers:
                    continue  # every answer offset was wrong: drop the question
                yield SpanExample(qid, question, context, answers)
    if bad_offsets:
        LOG.warning("%s: dropped %d answers whose answer_start does not match", path, bad_offsets)


# ---- multiple choice ----


def read_hellaswag(path: Path) -> Iterator[ChoiceExample]:
    """HellaSwag official jsonl: context ``ctx_a``; choice i = ``ctx_b + " " + endings[i]``."""
    path = Path(path)
    for lineno, obj in read_jsonl(path):
        ctx_a = _field(path, lineno, obj, "ctx_a")
        ctx_b = _field(path, lineno, obj, "ctx_b")
        endings = _field(path, lineno, obj, "endings", list)
        if not isinstance(endings, list) or len(endings) < 2:
            raise malformed(path, lineno, "'endings' must be a list of at least 2 strings")
        if not all(isinstance(e, str) for e in endings):
            raise malformed(path, lineno, "'endings' must hold strings")
        label = _choice_label(path, lineno, obj.get("label"), len(endings))
        choices = [f"{ctx_b} {e}".strip() for e in endings]
        guid = str(obj.get("ind", f"{path.name}:{lineno}"))
        yield ChoiceExample(guid, ctx_a, choices, label)


def _choice_label(path: Path, lineno: int | str, raw: Any, n: int) -> int:
    try:
        label = int(raw)
    except (TypeError, ValueError):
        raise malformed(path, lineno, f"label must be an integer, got {raw!r}") from None
    if not 0 <= label < n:
        raise malformed(path, lineno, f"label {label} out of range for {n} choices")
    return label


def read_cosmosqa(path: Path) -> Iterator[ChoiceExample]:
    """CosmosQA official jsonl or csv: context + question, four answers, ``label`` 0..3."""
    path = Path(path)
    rows = read_table(path, ",") if path.suffix == ".csv" else read_jsonl(path)
    for lineno, obj in rows:
        context = _field(path, lineno, obj, "context")
        question = _field(path, lineno, obj, "question")
        choices = [_field(path, lineno, obj, f"answer{i}") for i in range(4)]
        label = _choice_label(path, lineno, obj.get("label"), 4)
        guid = str(obj.get("id", f"{path.name}:{lineno}"))
        yield ChoiceExample(guid, f"{context} {question}", choices, label)


def read_commonsenseqa(path: Path) -> Iterator[ChoiceExample]:
    """CommonsenseQA official jsonl: ``question.stem``, five ``question.choices``, ``answerKey``."""
    path = Path(path)
    for lineno, obj in read_jsonl(path):
        q = _field(path, lineno, obj, "question", dict)
        if not isinstance(q, dict):
            raise malformed(path, lineno, "'question' must be an object")
        stem = _field(path, lineno, q, "stem")
        choices = _field(path, lineno, q, "choices", list)
        if not isinstance(choices, list) or len(choices) < 2:
            raise malformed(path, lineno, "'question.choices' must be a list of choices")
        labels, texts = [], []
        for c in choices:
            if not isinstance(c, dict) or "label" not in c or "text" not in c:
                raise malformed(path, lineno, "each choice needs 'label' and 'text'")
            labels.append(str(c["label"]))
            texts.append(str(c["text"]))
        key = _field(path, lineno, obj, "answerKey")
        if key not in labels:
            raise malformed(path, lineno, f"answerKey {key!r} is not one of {labels}")
        guid = str(obj.get("id", f"{path.name}:{lineno}"))
        yield ChoiceExample(guid, stem, texts, labels.index(key))


# ---- tagging ----


def read_ccg(path: Path) -> Iterator[TaggingExample]:
    """CCG supertags: ``word<TAB>tag`` per line (whitespace also accepted), blank line between
    sentences; ``#`` comment lines are skipped."""
    path = Path(path)
    words: list[str] = []
    tags: list[str] = []
    first = 0
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                if words:
                    yield TaggingExample(f"{path.name}:{first}", words, tags)
                    words, tags = [], []
                continue
            if line.startswith("#") and not words:
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise malformed(path, lineno, f"expected 'word<TAB>tag', got {line!r}")
            if not words:
                first = lineno
            words.append(parts[0])
            tags.append(parts[1])
    if words:
        yield TaggingExample(f"{path.name}:{first}", words, tags)
