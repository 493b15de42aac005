"""Dev-set evaluation: model outputs -> predictions -> metrics, per task kind.

The ``score_*`` functions are pure numpy (hand-checkable); :func:`evaluate_task` runs the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stilts.training import metrics
from stilts.training.examples import (
    ChoiceFeature,
    SpanExample,
    SpanFeature,
    TaggingExample,
    TaggingFeature,
)
from stilts.training.tasks import BITEXT, CLASSIFICATION, MULTIPLE_CHOICE, SPAN, TAGGING

MAX_ANSWER_TOKENS = 30


def score_classification(logits: np.ndarray, labels: Sequence[int], metric: str) -> dict:
    """Accuracy (and binary F1 of label 1 for ``accuracy_f1``) of the argmax predictions."""
    preds = np.asarray(logits).argmax(-1)
    out = {"accuracy": metrics.accuracy(preds, np.asarray(labels))}
    if metric == "accuracy_f1":
        out["f1"] = metrics.binary_f1(preds, labels)
    return out


def score_choices(logits: np.ndarray, labels: Sequence[int]) -> dict:
    return {"accuracy": metrics.accuracy(np.asarray(logits).argmax(-1), np.asarray(labels))}


def predict_spans(
    examples: Sequence[SpanExample],
    features: Sequence[SpanFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    allow_null: bool,
    max_answer_tokens: int = MAX_ANSWER_TOKENS,
) -> dict[str, str]:
    """Best answer text per question over all its windows.

    A span's score is its start + end logit; with ``allow_null`` (SQuAD v2) the question gets the
    empty answer when the null score (start and end on token 0, lowest over the windows) beats the
    best span.
    """
    best: dict[int, tuple[float, str]] = {}
    null: dict[int, float] = {}
    for f, s, e in zip(features, start_logits, end_logits, strict=True):
        i = f.example_index
        null[i] = min(null.get(i, np.inf), float(s[0] + e[0]))
        allowed = f.offsets[: len(s), 0] >= 0
        span = metrics.best_span(s, e, allowed, max_answer_tokens)
        if span is None:
            continue
        score, a, b = span
        if i not in best or score > best[i][0]:
            text = examples[i].context[f.offsets[a, 0] : f.offsets[b, 1]].strip()
            best[i] = (score, text)
    preds = {}
    for i, ex in enumerate(examples):
        if i in best and not (allow_null and null.get(i, -np.inf) > best[i][0]):
            preds[ex.guid] = best[i][1]
        else:
            preds[ex.guid] = ""
    return preds


def score_spans(
    examples: Sequence[SpanExample],
    features: Sequence[SpanFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
) -> dict:
    """SQuAD exact match / F1; null answers are allowed when the dev set has unanswerable ones."""
    allow_null = any(ex.is_impossible for ex in examples)
    preds = predict_spans(examples, features, start_logits, end_logits, allow_null)
    gold = {ex.guid: [a for a, _ in ex.answers] for ex in examples}
    return metrics.squad_scores(preds, gold)


def score_tags(
    examples: Sequence[TaggingExample],
    features: Sequence[TaggingFeature],
    logits: Sequence[np.ndarray],
    labels: Sequence[str],
) -> dict:
    """Word accuracy: the tag predicted on each word's first piece vs the gold tag string.

    Words cut off by ``max_seq_len`` and gold tags never seen in training count as errors.
    """
    correct = total = 0
    for ex, f, lg in zip(examples, features, logits, strict=True):
        pred = np.asarray(lg).argmax(-1)
        for w, gold in enumerate(ex.tags):
            total += 1
            p = f.word_positions[w]
            if p >= 0 and labels[pred[p]] == gold:
                correct += 1
    return {"accuracy": correct / total if total else 0.0}


def score_retrieval(
    sim: np.ndarray, source_keys: Sequence[int], target_keys: Sequence[int]
) -> dict[str, float]:
    """Top-1 translation retrieval on held-back pairs, both directions.

    ``sim[i, j]`` scores source ``i`` against target ``j``. Source ``i`` is answered correctly
    when its best target ``j`` is a translation of it: pair ``j`` has the text of source ``i`` or
    of target ``i`` (a source translated into several languages has several right answers); the
    same for target -> source.

    Returns:
        ``accuracy`` (the mean of the two directions), ``source_to_target``, ``target_to_source``.
    """
    sim = np.asarray(sim)
    src = np.asarray(source_keys)
    tgt = np.asarray(target_keys)
    if not len(src):
        return {"accuracy": 0.0, "source_to_target": 0.0, "target_to_source": 0.0}
    best_t, best_s = sim.argmax(1), sim.argmax(0)
    s2t = float(np.mean((src[best_t] == src) | (tgt[best_t] == tgt)))
    t2s = float(np.mean((src[best_s] == src) | (tgt[best_s] == tgt)))
    return {"accuracy": (s2t + t2s) / 2, "source_to_target": s2t, "target_to_source": t2s}


def evaluate_bitext(model, task, batch_size: int, device, pad_id: int, progress: bool = False):
    """Embed the dev pairs' two sides as exported and score top-1 retrieval
    (:func:`score_retrieval`); ``loss`` is the ranking loss with all dev pairs as one batch."""
    import torch
    from tqdm.auto import tqdm

    from stilts.training.batches import pad
    from stilts.training.heads import bitext_ranking_loss

    feats = task.dev_features
    seqs = [f.source_ids for f in feats] + [f.target_ids for f in feats]
    order = np.argsort([-len(x) for x in seqs], kind="stable")
    vectors: list[Any] = [None] * len(seqs)
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for idx in tqdm(batches, desc=f"eval {task.name}", disable=not progress, leave=False):
            chunk = [seqs[i] for i in idx]
            ids = pad(chunk, pad_id).to(device)
            mask = pad([np.ones(len(x), dtype=np.int64) for x in chunk], 0).to(device)
            out = model.embed(ids, mask).float().cpu()
            for row, i in enumerate(idx):
                vectors[i] = out[row]
        head = model.heads[task.name]
        n = len(feats)
        src, tgt = torch.stack(vectors[:n]), torch.stack(vectors[n:])
        loss, sim = bitext_ranking_loss(src, tgt, head.scale, head.margin)
    model.train(was_training)
    result = score_retrieval(
        sim.numpy(), [f.source_key for f in feats], [f.target_key for f in feats]
    )
    result["loss"] = float(loss)
    result["n"] = n
    return result


def _length(f: Any) -> int:
    if isinstance(f, ChoiceFeature):
        return max(len(x) for x in f.input_ids)
    return len(f.input_ids)


def evaluate_task(
    model,
    task,
    batch_size: int,
    device,
    pad_id: int,
    progress: bool = False,
) -> dict[str, float]:
    """Run ``task``'s dev features through ``model`` and score them.

    Args:
        model: a :class:`~stilts.training.model.MultiTaskModel` (unwrapped).
        task: a :class:`~stilts.training.data.TaskData` with dev examples and features.
        batch_size: dev batch size (features are sorted by length so padding stays small).
        device: torch device of the model.
        pad_id: padding id.

    Returns:
        the task's metrics plus ``loss`` (mean dev loss) and ``n`` (dev examples).
    """
    import torch
    from tqdm.auto import tqdm

    from stilts.training.batches import COLLATE

    spec = task.spec
    if spec.kind == BITEXT:
        return evaluate_bitext(model, task, batch_size, device, pad_id, progress)
    feats = task.dev_features
    order = np.argsort([-_length(f) for f in feats], kind="stable")
    outputs: list[Any] = [None] * len(feats)
    loss_sum = 0.0
    was_training = model.training
    model.eval()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.no_grad():
        for idx in tqdm(batches, desc=f"eval {spec.name}", disable=not progress, leave=False):
            batch = COLLATE[spec.kind](spec.name, [feats[i] for i in idx], pad_id).to_dict()
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            out = model(**batch)
            loss_sum += float(out["loss"]) * len(idx)
            logits = out["logits"].float().cpu().numpy()
            for row, i in enumerate(idx):
                if spec.kind in (SPAN, TAGGING):
                    outputs[i] = logits[row, : len(feats[i].input_ids)]
                else:
                    outputs[i] = logits[row]
    model.train(was_training)

    if spec.kind == CLASSIFICATION:
        result = score_classification(np.stack(outputs), [f.label for f in feats], spec.metric)
    elif spec.kind == MULTIPLE_CHOICE:
        result = score_choices(np.stack(outputs), [f.label for f in feats])
    elif spec.kind == SPAN:
        result = score_spans(
            task.dev_examples, feats, [o[:, 0] for o in outputs], [o[:, 1] for o in outputs]
        )
    else:
        result = score_tags(task.dev_examples, feats, outputs, task.labels)
    result["loss"] = loss_sum / max(len(feats), 1)
    result["n"] = len(task.dev_examples)
    return result
