"""The registry of STILTs intermediate tasks: name -> reader, head kind, metric and official files.

The nine English tasks of Phang et al. (2020), in four formats::

    pair classification   anli_plus, mnli, qqp
    extractive QA         squad_v1, squad_v2
    multiple choice       hellaswag, cosmosqa, commonsenseqa
    token tagging         ccg

and ``bitext``, a translation-ranking (dual-encoder) task on translation pairs (tab-separated, TMX,
XLIFF, PO/MO: :mod:`stilts.training.bitext_files`), such as ``stilts data bitext`` harvests.

``--data-dir DIR`` holds one folder per task, named as the task, with the files under their official
names (:data:`TASKS` lists them; the first of several alternatives that exists is used).
``--train-file TASK=PATH`` / ``--dev-file TASK=PATH`` override (repeat to give several files).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.training import bitext_files, readers

CLASSIFICATION = "classification"
SPAN = "span"
MULTIPLE_CHOICE = "multiple_choice"
TAGGING = "tagging"
BITEXT = "bitext"
KINDS = (CLASSIFICATION, SPAN, MULTIPLE_CHOICE, TAGGING, BITEXT)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One intermediate task.

    Attributes:
        name: registry name, also the folder name under ``--data-dir``.
        kind: head / format: classification, span, multiple_choice or tagging.
        reader: file -> examples.
        train_files: required file groups; each group lists alternative names, first existing wins.
        dev_files: the same for the dev split.
        labels: class labels (classification); tagging labels come from the training data.
        metric: ``accuracy``, ``accuracy_f1`` (accuracy and binary F1), ``squad`` (EM/F1),
            ``tagging_accuracy`` or ``retrieval`` (top-1 accuracy of translation retrieval).
        description: one line for ``--help`` and the README.
    """

    name: str
    kind: str
    reader: Callable[[Path], Iterator]
    train_files: tuple[tuple[str, ...], ...]
    dev_files: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...] = ()
    metric: str = "accuracy"
    description: str = ""

    def files(self, split: str) -> tuple[tuple[str, ...], ...]:
        if split not in ("train", "dev"):
            raise ValueError(f"split must be train or dev, got {split!r}")
        return self.train_files if split == "train" else self.dev_files


def _anli_round(r: int, split: str) -> tuple[str, ...]:
    return (f"anli_v1.0/R{r}/{split}.jsonl", f"R{r}/{split}.jsonl")


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec(
            "anli_plus",
            CLASSIFICATION,
            readers.read_nli,
            train_files=(
                _anli_round(1, "train"),
                _anli_round(2, "train"),
                _anli_round(3, "train"),
                ("multinli_1.0_train.jsonl",),
                ("snli_1.0_train.jsonl",),
            ),
            dev_files=(_anli_round(1, "dev"), _anli_round(2, "dev"), _anli_round(3, "dev")),
            labels=readers.NLI_LABELS,
            description="ANLI rounds 1-3 + MNLI + SNLI (train); ANLI R1-R3 dev",
        ),
        TaskSpec(
            "mnli",
            CLASSIFICATION,
            readers.read_nli,
            train_files=(("multinli_1.0_train.jsonl", "train.jsonl", "train.tsv"),),
            dev_files=(("multinli_1.0_dev_matched.jsonl", "dev_matched.jsonl", "dev_matched.tsv"),),
            labels=readers.NLI_LABELS,
            description="MultiNLI (official jsonl, premise/hypothesis/label jsonl or GLUE tsv)",
        ),
        TaskSpec(
            "qqp",
            CLASSIFICATION,
            readers.read_qqp,
            train_files=(("train.tsv",),),
            dev_files=(("dev.tsv",),),
            labels=readers.QQP_LABELS,
            metric="accuracy_f1",
            description="Quora Question Pairs (GLUE tsv)",
        ),
        TaskSpec(
            "squad_v1",
            SPAN,
            readers.read_squad,
            train_files=(("train-v1.1.json",),),
            dev_files=(("dev-v1.1.json",),),
            metric="squad",
            description="SQuAD v1.1 (official json)",
        ),
        TaskSpec(
            "squad_v2",
            SPAN,
            readers.read_squad,
            train_files=(("train-v2.0.json",),),
            dev_files=(("dev-v2.0.json",),),
            metric="squad",
            description="SQuAD v2.0 with unanswerable questions (official json)",
        ),
        TaskSpec(
            "hellaswag",
            MULTIPLE_CHOICE,
            readers.read_hellaswag,
            train_files=(("hellaswag_train.jsonl",),),
            dev_files=(("hellaswag_val.jsonl",),),
            description="HellaSwag (official jsonl)",
        ),
        TaskSpec(
            "cosmosqa",
            MULTIPLE_CHOICE,
            readers.read_cosmosqa,
            train_files=(("train.jsonl", "train.csv"),),
            dev_files=(("valid.jsonl", "valid.csv"),),
            description="Cosmos QA (official jsonl or csv)",
        ),
        TaskSpec(
            "commonsenseqa",
            MULTIPLE_CHOICE,
            readers.read_commonsenseqa,
            train_files=(("train_rand_split.jsonl",),),
            dev_files=(("dev_rand_split.jsonl",),),
            description="CommonsenseQA (official jsonl)",
        ),
        TaskSpec(
            "ccg",
            TAGGING,
            readers.read_ccg,
            train_files=(("ccg.train",),),
            dev_files=(("ccg.dev",),),
            metric="tagging_accuracy",
            description="CCG supertagging (CCGbank-derived: word<TAB>tag lines, blank line "
            "between sentences)",
        ),
        TaskSpec(
            "bitext",
            BITEXT,
            bitext_files.read_pairs,
            train_files=(("pairs.tsv",),),
            dev_files=(("dev.tsv",),),
            metric="retrieval",
            description="translation ranking on translation pairs (pairs.tsv / dev.tsv as "
            "`stilts data bitext` writes them; --train-file bitext=X.tmx|.xlf|.po|.mo|.tsv)",
        ),
    )
}


# The nine English tasks of the paper (``--tasks all``).
NINE_TASKS = tuple(n for n, t in TASKS.items() if t.kind != BITEXT)


def get_task(name: str) -> TaskSpec:
    """Look up a task by name.

    Raises:
        StiltsError: INVALID_ARGUMENT naming the unknown task and the known ones.
    """
    if name not in TASKS:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (or 'all')",
            field="tasks",
        )
    return TASKS[name]


def parse_tasks(spec: str | Sequence[str]) -> list[TaskSpec]:
    """``"mnli,squad_v1"`` or ``"all"`` -> task specs (order kept, duplicates rejected)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        names = list(NINE_TASKS)
    if not names:
        raise StiltsError(ErrorCode.INVALID_ARGUMENT, "no task given", field="tasks")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"task listed twice: {', '.join(dup)}", field="tasks"
        )
    return [get_task(n) for n in names]


def parse_file_overrides(items: Sequence[str] | None, field: str) -> dict[str, list[Path]]:
    """``["mnli=/x/train.jsonl", "mnli=/y.jsonl"]`` -> ``{"mnli": [Path(...), Path(...)]}``."""
    out: dict[str, list[Path]] = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT, f"expected TASK=PATH, got {item!r}", field=field
            )
        get_task(name.strip())
        out.setdefault(name.strip(), []).append(Path(os.path.expanduser(path.strip())))
    return out


def resolve_files(
    task: TaskSpec,
    split: str,
    data_dir: str | os.PathLike | None,
    overrides: Mapping[str, Sequence[Path]] | None = None,
    required: bool = True,
) -> list[Path]:
    """The files of one split of a task: the overrides if given, else the official names under
    ``data_dir/<task>/``.

    Args:
        required: raise when files are missing (train); else return [] (a task without dev data
            is trained but not evaluated).

    Raises:
        StiltsError: NOT_FOUND naming every expected path that is missing.
    """
    flag = "--train-file" if split == "train" else "--dev-file"
    if overrides and overrides.get(task.name):
        files = list(overrides[task.name])
        missing = [str(p) for p in files if not p.is_file()]
        if missing:
            raise StiltsError(
                ErrorCode.NOT_FOUND,
                f"{task.name} {split} file not found: {', '.join(missing)}",
                field=flag.lstrip("-").replace("-", "_"),
            )
        return files
    if data_dir is None:
        if not required:
            return []
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"{task.name}: give --data-dir (or {flag} {task.name}=PATH)",
            field="data_dir",
        )
    root = Path(data_dir) / task.name
    files: list[Path] = []
    missing_groups: list[str] = []
    for group in task.files(split):
        found = next((root / n for n in group if (root / n).is_file()), None)
        if found is None:
            missing_groups.append(" or ".join(str(root / n) for n in group))
        else:
            files.append(found)
    if missing_groups:
        if not required:
            return []
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"{task.name} {split} data not found: expected {'; '.join(missing_groups)} "
            f"(or pass {flag} {task.name}=PATH)",
            field="data_dir",
        )
    return files
