"""stilts.training without a model: readers of the official formats, task registry, features,
metrics and evaluation scoring (hand-checked), multi-task sampling."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest

from stilts.errors import ErrorCode, StiltsError
from stilts.training import metrics, readers, samples
from stilts.training.data import read_examples
from stilts.training.evaluation import (
    predict_spans,
    score_choices,
    score_classification,
    score_spans,
    score_tags,
)
from stilts.training.examples import (
    IGNORE_INDEX,
    SpanExample,
    SpanFeature,
    TaggingExample,
    TaggingFeature,
)
from stilts.training.features import (
    featurize_choices,
    featurize_pairs,
    featurize_spans,
    featurize_tags,
    tag_vocabulary,
)
from stilts.training.sampling import (
    MultiTaskBatchSampler,
    epoch_batches,
    parse_sampling,
    task_probabilities,
)
from stilts.training.tasks import (
    TASKS,
    parse_file_overrides,
    parse_tasks,
    resolve_files,
)
from stilts.training.text import TextTokenizer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("stilts-tasks")
    samples.write_samples(root)
    return root


@pytest.fixture(scope="module")
def word_tok(tmp_path_factory):
    """A word-level tokenizer over the sample text: one token per word or punctuation run, so
    token positions can be checked by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    split = pre_tokenizers.Whitespace().pre_tokenize_str
    words = sorted({w for text in samples.all_text() for w, _ in split(text)})
    vocab = {t: i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    path = tmp_path_factory.mktemp("word-tok") / "tokenizer.json"
    tok.save(str(path))
    return TextTokenizer(path)


def _read(task, split, data_dir):
    spec = TASKS[task]
    return read_examples(spec, resolve_files(spec, split, data_dir))


# ---- readers and registry ----


def test_registry_has_the_nine_tasks_in_four_formats_and_bitext():
    nine = [
        "anli_plus",
        "mnli",
        "qqp",
        "squad_v1",
        "squad_v2",
        "hellaswag",
        "cosmosqa",
        "commonsenseqa",
        "ccg",
    ]
    assert list(TASKS) == [*nine, "bitext"]
    assert {TASKS[t].kind for t in nine} == {
        "classification",
        "span",
        "multiple_choice",
        "tagging",
    }
    assert TASKS["bitext"].kind == "bitext" and TASKS["bitext"].metric == "retrieval"
    # "all" is the paper's nine; bitext is mixed in by name
    assert [t.name for t in parse_tasks("all")] == nine
    assert [t.name for t in parse_tasks("mnli,bitext")] == ["mnli", "bitext"]
    assert [t.name for t in parse_tasks("squad_v1, mnli")] == ["squad_v1", "mnli"]


@pytest.mark.parametrize(
    "task,n_train,n_dev",
    [
        ("anli_plus", 24, 4),
        ("mnli", 12, 4),
        ("qqp", 8, 4),
        ("squad_v1", 6, 2),
        ("squad_v2", 8, 3),
        ("hellaswag", 6, 2),
        ("cosmosqa", 6, 2),
        ("commonsenseqa", 6, 2),
        ("ccg", 6, 2),
    ],
)
def test_every_task_reads_its_official_files(data_dir, task, n_train, n_dev):
    assert len(_read(task, "train", data_dir)) == n_train
    assert len(_read(task, "dev", data_dir)) == n_dev


def test_readers_map_fields_as_the_official_formats_define(data_dir):
    mnli = _read("mnli", "train", data_dir)[1]
    assert (mnli.text_a, mnli.text_b, mnli.label) == (
        "A man is playing a guitar on stage.",
        "The stage is empty.",
        "contradiction",
    )
    # ANLI's e/n/c labels
    anli = _read("anli_plus", "train", data_dir)
    assert {e.label for e in anli} == set(readers.NLI_LABELS)
    qqp = _read("qqp", "dev", data_dir)
    assert [e.label for e in qqp] == ["duplicate", "not_duplicate"] * 2
    v2 = _read("squad_v2", "train", data_dir)
    assert sum(e.is_impossible for e in v2) == 2
    norm = v2[0]
    assert norm.answers == [("France", norm.context.index("France"))]
    hs = _read("hellaswag", "train", data_dir)[0]
    assert hs.context == "A man is standing on a ladder next to a house."
    assert hs.choices[0] == "He paints the wall with a roller." and hs.label == 0
    cosmos = _read("cosmosqa", "train", data_dir)[1]
    assert cosmos.context.endswith("Why did she study so much?") and cosmos.label == 1
    csqa = _read("commonsenseqa", "train", data_dir)[3]
    assert csqa.choices[csqa.label] == "light"
    ccg = _read("ccg", "train", data_dir)[1]
    assert ccg.words == ["Mary", "likes", "apples", "."]
    assert ccg.tags == ["N", "(S[dcl]\\NP)/NP", "N", "."]


def test_nli_glue_tsv_hf_jsonl_and_unlabelled_pairs(tmp_path):
    tsv = tmp_path / "dev_matched.tsv"
    header = (
        "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label"
    )
    rows = [
        '0\t1\t1e\tslate\t(x)\t(y)\t(X)\t(Y)\tHe said "hi.\tHe spoke.\tentailment\tentailment',
        "1\t2\t2n\tslate\t(x)\t(y)\t(X)\t(Y)\tA b.\tC d.\tneutral\t-",
        "2\t3\t3c\tslate\t(x)\t(y)\t(X)\t(Y)\tIt is red.\tIt is blue.\tcontradiction\tcontradiction",
    ]
    tsv.write_text("\n".join([header, *rows]) + "\n")
    got = list(readers.read_nli(tsv))
    # the bare quote is kept (GLUE tsvs are unquoted) and the "-" pair is skipped
    assert [(e.text_a, e.label) for e in got] == [
        ('He said "hi.', "entailment"),
        ("It is red.", "contradiction"),
    ]
    hf = tmp_path / "train.jsonl"
    hf.write_text(
        json.dumps({"premise": "P.", "hypothesis": "H.", "label": 2})
        + "\n"
        + json.dumps({"premise": "Q.", "hypothesis": "I.", "label": -1})
        + "\n"
    )
    assert [(e.text_a, e.label) for e in readers.read_nli(hf)] == [("P.", "contradiction")]


def test_cosmosqa_jsonl_layout(tmp_path):
    p = tmp_path / "train.jsonl"
    row = {"id": "x1", "context": "C.", "question": "Q?", "label": 3}
    row.update({f"answer{i}": f"a{i}" for i in range(4)})
    p.write_text(json.dumps(row) + "\n")
    (ex,) = readers.read_cosmosqa(p)
    assert (ex.guid, ex.context, ex.choices, ex.label) == (
        "x1",
        "C. Q?",
        ["a0", "a1", "a2", "a3"],
        3,
    )


MALFORMED = [
    (
        "read_nli",
        "x.jsonl",
        '{"premise": "a", "hypothesis": "b", "label": 0}\n\n{"premise": \n',
        ":3:",
        "invalid JSON",
    ),
    (
        "read_nli",
        "x.jsonl",
        '{"sentence1": "a", "sentence2": "b", "gold_label": "maybe"}\n',
        ":1:",
        "'maybe'",
    ),
    ("read_nli", "x.jsonl", '{"text": "a"}\n', ":1:", "expected fields"),
    (
        "read_qqp",
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\ta\tb\n",
        ":2:",
        "expected 6 columns",
    ),
    (
        "read_qqp",
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\ta\tb\tyes\n",
        ":2:",
        "is_duplicate",
    ),
    (
        "read_hellaswag",
        "h.jsonl",
        '{"ctx_a": "a", "ctx_b": "b", "endings": ["x", "y"], "label": 2}\n',
        ":1:",
        "out of range",
    ),
    (
        "read_commonsenseqa",
        "c.jsonl",
        '{"answerKey": "Z", "question": {"stem": "s", "choices": [{"label": "A", "text": "t"}, {"label": "B", "text": "u"}]}}\n',
        ":1:",
        "answerKey 'Z'",
    ),
    (
        "read_cosmosqa",
        "valid.csv",
        "id,context,question,answer0,answer1,answer2,label\nx,c,q,a,b,c,1\n",
        ":2:",
        "missing field 'answer3'",
    ),
    ("read_ccg", "ccg.train", "The\tNP/N\ndog\tN\textra\n", ":2:", "word<TAB>tag"),
]


@pytest.mark.parametrize("reader,name,text,where,what", MALFORMED)
def test_malformed_files_are_rejected_naming_file_and_line(
    tmp_path, reader, name, text, where, what
):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(StiltsError) as e:
        list(getattr(readers, reader)(path))
    assert e.value.code == ErrorCode.INVALID_ARGUMENT
    assert f"{path}{where}" in str(e.value) and what in str(e.value)


def test_squad_structure_errors_name_the_item_and_bad_offsets_are_dropped(tmp_path, caplog):
    ctx = "Paris is the capital of France."
    doc = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": ctx,
                        "qas": [
                            {
                                "id": "a",
                                "question": "Capital?",
                                "answers": [{"text": "Paris", "answer_start": 0}],
                            },
                            {
                                "id": "b",
                                "question": "Wrong?",
                                "answers": [{"text": "France", "answer_start": 3}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    p = tmp_path / "train-v1.1.json"
    p.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        got = list(readers.read_squad(p))
    assert [e.guid for e in got] == ["a"]
    assert "dropped 1 answers" in caplog.text
    del doc["data"][0]["paragraphs"][0]["qas"][1]["question"]
    p.write_text(json.dumps(doc))
    with pytest.raises(
        StiltsError, match=r"data\[0\]\.paragraphs\[0\]\.qas\[1\]: missing field 'question'"
    ):
        list(readers.read_squad(p))
    p.write_text('{"data": [\n{"paragraphs": [}\n')
    with pytest.raises(StiltsError, match=rf"{p}:2: invalid JSON"):
        list(readers.read_squad(p))


def test_missing_data_and_bad_task_names_are_clear_errors(tmp_path, data_dir):
    with pytest.raises(StiltsError) as e:
        resolve_files(TASKS["mnli"], "train", tmp_path)
    assert e.value.code == ErrorCode.NOT_FOUND
    assert str(tmp_path / "mnli" / "multinli_1.0_train.jsonl") in str(e.value)
    # ANLI+ needs all five of its training files
    shutil.copytree(data_dir / "anli_plus", tmp_path / "anli_plus")
    (tmp_path / "anli_plus" / "snli_1.0_train.jsonl").unlink()
    with pytest.raises(StiltsError, match="snli_1.0_train.jsonl"):
        resolve_files(TASKS["anli_plus"], "train", tmp_path)
    assert len(resolve_files(TASKS["anli_plus"], "dev", tmp_path)) == 3
    assert resolve_files(TASKS["mnli"], "dev", tmp_path, required=False) == []
    with pytest.raises(StiltsError) as e:
        parse_tasks("mnli,nope")
    assert e.value.field == "tasks" and "unknown task 'nope'" in str(e.value)
    with pytest.raises(StiltsError, match="listed twice"):
        parse_tasks("mnli,mnli")
    with pytest.raises(StiltsError) as e:
        parse_file_overrides(["mnli:/x"], "train_file")
    assert e.value.field == "train_file"
    over = parse_file_overrides([f"mnli={tmp_path / 'none.jsonl'}"], "train_file")
    with pytest.raises(StiltsError, match="none.jsonl"):
        resolve_files(TASKS["mnli"], "train", None, over)


def test_file_overrides_replace_the_data_dir(data_dir):
    p = data_dir / "mnli" / "multinli_1.0_dev_matched.jsonl"
    over = parse_file_overrides([f"mnli={p}", f"mnli={p}"], "train_file")
    files = resolve_files(TASKS["mnli"], "train", data_dir, over)
    assert files == [p, p]
    assert len(read_examples(TASKS["mnli"], files)) == 8
    assert len(read_examples(TASKS["mnli"], files, limit=5)) == 5


# ---- features ----


def test_pair_and_choice_features_use_the_pair_template(data_dir, word_tok):
    ex = _read("mnli", "train", data_dir)[:3]
    feats = featurize_pairs(ex, word_tok, readers.NLI_LABELS, max_len=64)
    assert [f.label for f in feats] == [0, 2, 1]
    toks = [word_tok.tok.id_to_token(int(i)) for i in feats[1].input_ids]
    assert toks == [
        "<s>",
        "A",
        "man",
        "is",
        "playing",
        "a",
        "guitar",
        "on",
        "stage",
        ".",
        "</s>",
        "</s>",
        "The",
        "stage",
        "is",
        "empty",
        ".",
        "</s>",
    ]
    # longest_first truncation keeps both sides
    cut = featurize_pairs(ex[1:2], word_tok, readers.NLI_LABELS, max_len=10)[0]
    assert len(cut.input_ids) == 10 and list(cut.input_ids).count(2) == 3
    mc = featurize_choices(_read("commonsenseqa", "dev", data_dir), word_tok, max_len=64)
    assert len(mc[0].input_ids) == 5 and mc[0].label == 1
    second = [word_tok.tok.id_to_token(int(i)) for i in mc[0].input_ids[1]]
    assert second[-2:] == ["refrigerator", "</s>"]


def test_span_labels_point_at_the_answer_in_every_window(data_dir, word_tok):
    examples = _read("squad_v2", "train", data_dir)
    for max_len in (128, 24):
        feats = featurize_spans(examples, word_tok, max_len=max_len, doc_stride=8)
        assert {f.example_index for f in feats} == set(range(len(examples)))
        for f in feats:
            ex = examples[f.example_index]
            assert len(f.input_ids) <= max_len
            if f.start == 0:
                assert f.end == 0
                if ex.answers:  # the answer is not wholly inside this window
                    text, s = ex.answers[0]
                    ctx = f.offsets[f.offsets[:, 0] >= 0]
                    assert not (ctx[0, 0] <= s and ctx[-1, 1] >= s + len(text))
                continue
            text, _ = ex.answers[0]
            got = ex.context[f.offsets[f.start, 0] : f.offsets[f.end, 1]]
            assert got == text
        if max_len == 24:
            # long contexts are cut into overlapping windows
            assert len(feats) > len(examples)
            # every answerable question is labelled in at least one window
            labelled = {f.example_index for f in feats if f.start > 0}
            assert labelled == {i for i, e in enumerate(examples) if e.answers}


def test_tag_features_label_first_pieces_only(word_tok):
    examples = [
        TaggingExample("s:1", ["New-York", "sleeps", "."], ["N", "S\\NP", "."]),
        TaggingExample("s:5", ["Paris", "wakes"], ["N", "S/NP"]),
    ]
    labels = tag_vocabulary(examples[:1])
    assert labels == [".", "N", "S\\NP"]  # all once: alphabetical
    f0, f1 = featurize_tags(examples, word_tok, labels, max_len=64)
    # <s> New - York sleeps . </s>
    assert list(f0.word_positions) == [1, 4, 5]
    assert list(f0.labels) == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX, 2, 0, IGNORE_INDEX]
    # "S/NP" was never seen in training: unlabelled
    assert list(f1.labels) == [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]
    cut = featurize_tags(examples[:1], word_tok, labels, max_len=4)[0]
    assert list(cut.word_positions) == [1, -1, -1]


# ---- metrics (hand-checked) ----


def test_accuracy_and_binary_f1():
    assert metrics.accuracy([0, 1, 2, 1], [0, 2, 2, 1]) == 0.75
    # tp=1, fp=1, fn=1: precision = recall = 1/2
    assert metrics.binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == 0.5
    assert metrics.binary_f1([0, 0], [1, 0]) == 0.0


def test_squad_metrics_follow_the_official_script():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    # pred {cat, sat}, gold {cat, sat, down}: p = 1, r = 2/3, F1 = 0.8
    assert metrics.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    preds = {"q1": "Denmark", "q2": "in 1774", "q3": "", "q4": "Paris"}
    gold = {
        "q1": ["Denmark, Iceland and Norway", "Denmark"],
        "q2": ["1774"],
        "q3": [],
        "q4": [],
    }
    s = metrics.squad_scores(preds, gold)
    # q1 1/1, q2 EM 0 F1 2/3, q3 1/1 (no answer predicted), q4 0/0 (answer to unanswerable)
    assert s["exact_match"] == pytest.approx(2 / 4)
    assert s["f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert s["has_answer_exact_match"] == pytest.approx(0.5)
    assert s["no_answer_exact_match"] == pytest.approx(0.5)
    v1 = metrics.squad_scores({"a": "x"}, {"a": ["x"], "b": ["y"]})
    assert v1 == {"exact_match": 0.5, "f1": 0.5}  # a missing prediction scores 0


def test_best_span_respects_order_length_and_context():
    s = np.array([0.0, 5.0, 1.0, 4.0, 0.0])
    e = np.array([0.0, 0.0, 6.0, 2.0, 3.0])
    allowed = np.array([False, True, True, True, True])
    assert metrics.best_span(s, e, allowed) == (11.0, 1, 2)
    assert metrics.best_span(s, e, allowed, max_answer_tokens=1) == (7.0, 2, 2)
    # end before start is never chosen: only e at 1 allowed but s at 3
    assert metrics.best_span(s, e, np.array([0, 0, 0, 1, 0], bool)) == (6.0, 3, 3)
    assert metrics.best_span(s, e, np.zeros(5, bool)) is None


def test_scoring_of_classification_choices_spans_and_tags():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 0.5], [5.0, 0.0, 0.0]])
    assert score_classification(logits, [0, 1, 2, 1], "accuracy") == {"accuracy": 0.5}
    two = np.array([[0.2, 0.1], [0.0, 1.0], [1.0, 0.0]])
    assert score_classification(two, [1, 1, 1], "accuracy_f1") == {
        "accuracy": pytest.approx(1 / 3),
        "f1": pytest.approx(0.5),  # p = 1, r = 1/3
    }
    assert score_choices(np.array([[0.1, 0.9, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]), [1, 3]) == {
        "accuracy": 0.5
    }

    ctx = "Oxygen was found in 1773 by Scheele."
    ex = [SpanExample("q", "When?", ctx, [("1773", 20)]), SpanExample("n", "Who?", ctx, [])]
    # tokens: <s> q </s> | Oxygen(0,6) was(7,10) found(11,16) in(17,19) 1773(20,24) ...
    offsets = np.array(
        [[-1, -1], [-1, -1], [-1, -1], [0, 6], [7, 10], [11, 16], [17, 19], [20, 24]]
    )
    feats = [
        SpanFeature(0, np.zeros(8, np.int32), offsets, 7, 7),
        SpanFeature(1, np.zeros(8, np.int32), offsets, 0, 0),
    ]
    start = [np.array([0, 9, 9, 0, 0, 0, 0, 5.0]), np.array([4.0, 0, 0, 1, 0, 0, 0, 0])]
    end = [np.array([0, 9, 9, 0, 0, 0, 0, 5.0]), np.array([4.0, 0, 0, 0, 0, 2, 0, 0])]
    # question tokens (9) are not context; q's best span is token 7 = "1773" (10 > null 0).
    # n's best span Oxygen..found scores 3 < null 8: no answer when nulls are allowed.
    assert predict_spans(ex, feats, start, end, allow_null=True) == {"q": "1773", "n": ""}
    assert predict_spans(ex, feats, start, end, allow_null=False)["n"] == "Oxygen was found"
    assert score_spans(ex, feats, start, end)["exact_match"] == 1.0

    tags = [TaggingExample("t", ["a", "b", "c"], ["N", "V", "X"])]
    feats_t = [TaggingFeature(np.zeros(4, np.int32), np.zeros(4, np.int32), np.array([1, 2, -1]))]
    lg = [np.array([[0, 0], [3, 0], [3, 0], [0, 3.0]])]
    # a -> N right, b -> N wrong, c truncated: wrong; 1/3
    assert score_tags(tags, feats_t, lg, ["N", "V"]) == {"accuracy": pytest.approx(1 / 3)}


# ---- multi-task sampling ----


def test_task_probabilities_by_strategy_and_cap():
    sizes = {"a": 100, "b": 300, "c": 10_000}
    p = task_probabilities(sizes, "proportional", cap=1000)
    assert p == pytest.approx({"a": 100 / 1400, "b": 300 / 1400, "c": 1000 / 1400})
    assert task_probabilities(sizes, "uniform") == pytest.approx({k: 1 / 3 for k in sizes})
    w = {"a": 10.0, "b": math.sqrt(300), "c": math.sqrt(1000)}
    t = task_probabilities(sizes, "temperature:2", cap=1000)
    assert t == pytest.approx({k: v / sum(w.values()) for k, v in w.items()})
    assert epoch_batches(sizes, 32, cap=1000) == 4 + 10 + 32
    for bad in ("temperature:0", "temperature:x", "random", "uniform:2"):
        with pytest.raises(StiltsError) as e:
            parse_sampling(bad)
        assert e.value.field == "sampling"
    with pytest.raises(StiltsError, match="no training examples for b"):
        task_probabilities({"a": 3, "b": 0})


def test_batch_sampler_matches_the_requested_proportions():
    sizes = {"a": 100, "b": 300, "c": 10_000}
    p = task_probabilities(sizes, "proportional", cap=1000)
    sampler = MultiTaskBatchSampler(sizes, 10, p, num_batches=4000, seed=3)
    offsets = {"a": (0, 100), "b": (100, 400), "c": (400, 10_400)}
    counts = dict.fromkeys(sizes, 0)
    firsts: list[int] = []
    for batch in sampler:
        assert len(batch) == 10
        task = next(t for t, (lo, hi) in offsets.items() if lo <= batch[0] < hi)
        lo, hi = offsets[task]
        assert all(lo <= i < hi for i in batch)  # one task per batch
        counts[task] += 1
        if task == "a" and len(firsts) < 100:
            firsts.extend(batch)
    for t in sizes:  # binomial sd <= 0.008 at n = 4000
        assert counts[t] / 4000 == pytest.approx(p[t], abs=0.03)
    # a task's examples are all visited once before any repeats
    assert sorted(firsts) == list(range(100))


def test_batch_sampler_order_depends_only_on_seed_and_epoch():
    sizes = {"a": 7, "b": 50}
    p = task_probabilities(sizes, "uniform")
    s1 = MultiTaskBatchSampler(sizes, 4, p, 20, seed=1)
    s2 = MultiTaskBatchSampler(sizes, 4, p, 20, seed=1)
    assert list(s1) == list(s2) and len(s1) == 20
    first = list(s1)
    s1.set_epoch(1)
    assert list(s1) != first
    s2.set_epoch(1)
    assert list(s1) == list(s2)
