"""A few hand-written English examples of every task, written in each task's official file format.

For smoke tests and the docs (the real datasets are not on this machine)::

    python -m stilts.training.samples DIR     # DIR/<task>/<official file names>
    stilts train --model default --tasks all --data-dir DIR --output run --max-steps 3 ...
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

# (premise, hypothesis, label)
NLI = [
    ("A man is playing a guitar on stage.", "A man is performing music.", "entailment"),
    ("A man is playing a guitar on stage.", "The stage is empty.", "contradiction"),
    ("A man is playing a guitar on stage.", "The man is a famous singer.", "neutral"),
    ("Two dogs run through a snowy field.", "Animals are outside in the snow.", "entailment"),
    ("Two dogs run through a snowy field.", "The dogs are sleeping indoors.", "contradiction"),
    ("Two dogs run through a snowy field.", "The dogs are chasing a ball.", "neutral"),
    ("The museum opens at nine every morning.", "The museum opens in the morning.", "entailment"),
    ("The museum opens at nine every morning.", "The museum is closed all week.", "contradiction"),
    ("A child reads a book under a tree.", "A child is reading.", "entailment"),
    ("A child reads a book under a tree.", "The child is swimming.", "contradiction"),
    ("A child reads a book under a tree.", "The book is about dragons.", "neutral"),
    ("The train to Paris was delayed by an hour.", "The train arrived late.", "entailment"),
]
NLI_DEV = [
    ("A woman is slicing tomatoes in a kitchen.", "Someone is preparing food.", "entailment"),
    ("A woman is slicing tomatoes in a kitchen.", "The woman is asleep.", "contradiction"),
    ("A woman is slicing tomatoes in a kitchen.", "She is cooking for her family.", "neutral"),
    ("The bridge was closed because of the storm.", "The bridge was open.", "contradiction"),
]
# (question1, question2, is_duplicate)
QQP = [
    ("How do I learn Python quickly?", "What is the fastest way to learn Python?", 1),
    ("How do I learn Python quickly?", "What is the capital of Peru?", 0),
    ("Why is the sky blue?", "What makes the sky look blue?", 1),
    ("Why is the sky blue?", "How tall is Mount Everest?", 0),
    ("How can I improve my English?", "What are good ways to get better at English?", 1),
    ("How can I improve my English?", "Which phone has the best camera?", 0),
    ("What is a black hole?", "How are black holes formed and what are they?", 1),
    ("What is a black hole?", "How do I bake bread at home?", 0),
]
QQP_DEV = [
    ("How do I lose weight safely?", "What is a healthy way to lose weight?", 1),
    ("How do I lose weight safely?", "Who wrote Hamlet?", 0),
    ("What is the best way to save money?", "How can I save more money each month?", 1),
    ("What is the best way to save money?", "Where do penguins live?", 0),
]
# (title, context, [(question, answer or None)])
SQUAD = [
    (
        "Normans",
        "The Normans were the people who in the 10th and 11th centuries gave their name to "
        "Normandy, a region in France. They were descended from Norse raiders and pirates "
        "from Denmark, Iceland and Norway.",
        [
            ("In what country is Normandy located?", "France"),
            ("When did the Normans give their name to Normandy?", "10th and 11th centuries"),
            ("From which countries did the Norse originate?", "Denmark, Iceland and Norway"),
            ("Who founded the first Norman university?", None),
        ],
    ),
    (
        "Oxygen",
        "Oxygen is a chemical element with symbol O and atomic number 8. It was discovered by "
        "Carl Wilhelm Scheele in Uppsala in 1773, and independently by Joseph Priestley in 1774.",
        [
            ("What is the atomic number of oxygen?", "8"),
            ("Who discovered oxygen in Uppsala?", "Carl Wilhelm Scheele"),
            ("In which year did Priestley find oxygen?", "1774"),
            ("What is the melting point of gold?", None),
        ],
    ),
]
SQUAD_DEV = [
    (
        "Rivers",
        "The Rhine flows from the Swiss Alps to the North Sea and is about 1,230 kilometres "
        "long. It passes through Switzerland, Germany and the Netherlands.",
        [
            ("Where does the Rhine end?", "the North Sea"),
            ("How long is the Rhine?", "about 1,230 kilometres"),
            ("Who built the first bridge over the Rhine?", None),
        ],
    ),
]
# (ctx_a, ctx_b, endings, label)
HELLASWAG = [
    (
        "A man is standing on a ladder next to a house.",
        "He",
        [
            "paints the wall with a roller.",
            "swims across the pool.",
            "eats a sandwich in a car.",
            "flies over the clouds.",
        ],
        0,
    ),
    (
        "A woman puts flour and eggs into a bowl.",
        "She",
        [
            "drives to the airport.",
            "whisks them together into a batter.",
            "plants a tree in the garden.",
            "reads the newspaper.",
        ],
        1,
    ),
    (
        "A boy kicks a ball towards the goal.",
        "The goalkeeper",
        [
            "sings a song loudly.",
            "writes a letter.",
            "dives and catches the ball.",
            "falls asleep on the grass.",
        ],
        2,
    ),
    (
        "A girl ties her running shoes at the starting line.",
        "She",
        [
            "paints her nails.",
            "opens an umbrella.",
            "cooks some rice.",
            "sprints forward when the whistle blows.",
        ],
        3,
    ),
    (
        "A man pours water into a kettle.",
        "He",
        [
            "switches the kettle on to boil.",
            "throws the kettle out the window.",
            "puts the kettle in the freezer.",
            "mails the kettle to a friend.",
        ],
        0,
    ),
    (
        "A woman holds a pair of scissors over wrapping paper.",
        "She",
        [
            "eats the paper.",
            "cuts the paper to fit the box.",
            "burns the scissors.",
            "sings to the paper.",
        ],
        1,
    ),
]
HELLASWAG_DEV = [
    (
        "A chef places a steak in a hot pan.",
        "The steak",
        ["starts to sizzle loudly.", "flies out the door.", "turns into ice.", "reads a book."],
        0,
    ),
    (
        "A man lathers shaving cream on his face.",
        "He",
        [
            "plays the piano.",
            "climbs a mountain.",
            "shaves carefully with a razor.",
            "feeds the fish.",
        ],
        2,
    ),
]
# (context, question, answers, label)
COSMOS = [
    (
        "I forgot my umbrella at home and it started to pour on my way to work.",
        "What probably happened to me?",
        [
            "I got wet in the rain.",
            "I won the lottery.",
            "I bought a new car.",
            "None of the above choices.",
        ],
        0,
    ),
    (
        "My sister studied every night for a month before the exam.",
        "Why did she study so much?",
        [
            "She wanted to go to the beach.",
            "She wanted to pass the exam.",
            "She did not care about school.",
            "None of the above choices.",
        ],
        1,
    ),
    (
        "We waited two hours at the restaurant and the food was cold.",
        "How did we probably feel?",
        [
            "Delighted and grateful.",
            "Sleepy but happy.",
            "Annoyed and disappointed.",
            "None of the above choices.",
        ],
        2,
    ),
    (
        "The power went out during the storm, so we lit candles.",
        "Why did we light candles?",
        [
            "To celebrate a birthday.",
            "To cook dinner.",
            "To scare the cat.",
            "Because there was no electricity.",
        ],
        3,
    ),
    (
        "Tom practised the piano every day and played at the school concert.",
        "What may happen after the concert?",
        [
            "People applaud his playing.",
            "He forgets how to walk.",
            "The piano turns into a tree.",
            "None of the above choices.",
        ],
        0,
    ),
    (
        "Anna missed the last bus after the party.",
        "What might Anna do next?",
        [
            "Fly home on a dragon.",
            "Call a taxi to get home.",
            "Stay at the bus stop for a year.",
            "None of the above choices.",
        ],
        1,
    ),
]
COSMOS_DEV = [
    (
        "I dropped my phone in the lake while fishing.",
        "What is true about my phone?",
        [
            "It probably stopped working.",
            "It became a fish.",
            "It got faster.",
            "None of the above choices.",
        ],
        0,
    ),
    (
        "The kids cleaned their rooms without being asked.",
        "How did their parents likely feel?",
        ["Angry.", "Proud of them.", "Scared.", "None of the above choices."],
        1,
    ),
]
# (stem, choices A-E, answerKey, concept)
CSQA = [
    (
        "Where would you put a plate after washing it?",
        ["cupboard", "ocean", "roof", "shoe", "car engine"],
        "A",
        "plate",
    ),
    (
        "What do people use to cut paper?",
        ["spoon", "scissors", "pillow", "cup", "blanket"],
        "B",
        "paper",
    ),
    ("Where do fish live?", ["desert", "sky", "water", "oven", "library"], "C", "fish"),
    (
        "What do you need to see in the dark?",
        ["sand", "salt", "music", "light", "glue"],
        "D",
        "dark",
    ),
    (
        "Where would you buy fresh bread?",
        ["bakery", "garage", "zoo", "cinema", "bank"],
        "A",
        "bread",
    ),
    (
        "What does a thirsty person want?",
        ["sleep", "drink", "hat", "book", "ladder"],
        "B",
        "thirsty",
    ),
]
CSQA_DEV = [
    (
        "Where do you keep milk cold?",
        ["stove", "refrigerator", "mailbox", "garden", "attic"],
        "B",
        "milk",
    ),
    (
        "What do you wear on your feet?",
        ["gloves", "scarf", "shoes", "necklace", "hat"],
        "C",
        "feet",
    ),
]
# sentences as (word, CCG supertag) lists
CCG = [
    [("The", "NP[nb]/N"), ("dog", "N"), ("barked", "S[dcl]\\NP"), (".", ".")],
    [("Mary", "N"), ("likes", "(S[dcl]\\NP)/NP"), ("apples", "N"), (".", ".")],
    [("The", "NP[nb]/N"), ("cat", "N"), ("sleeps", "S[dcl]\\NP"), (".", ".")],
    [("John", "N"), ("reads", "(S[dcl]\\NP)/NP"), ("books", "N"), (".", ".")],
    [("A", "NP[nb]/N"), ("bird", "N"), ("sings", "S[dcl]\\NP"), (".", ".")],
    [("Peter", "N"), ("eats", "(S[dcl]\\NP)/NP"), ("bread", "N"), (".", ".")],
]
CCG_DEV = [
    [("The", "NP[nb]/N"), ("child", "N"), ("laughed", "S[dcl]\\NP"), (".", ".")],
    [("Anna", "N"), ("loves", "(S[dcl]\\NP)/NP"), ("music", "N"), (".", ".")],
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def mnli_rows(pairs, genre: str = "fiction") -> list[dict]:
    """Rows in the official MultiNLI / SNLI jsonl layout."""
    return [
        {
            "annotator_labels": [label],
            "genre": genre,
            "gold_label": label,
            "pairID": f"{i}e",
            "promptID": i,
            "sentence1": a,
            "sentence1_binary_parse": "( " + a + " )",
            "sentence1_parse": "(ROOT " + a + ")",
            "sentence2": b,
            "sentence2_binary_parse": "( " + b + " )",
            "sentence2_parse": "(ROOT " + b + ")",
        }
        for i, (a, b, label) in enumerate(pairs)
    ]


def anli_rows(pairs) -> list[dict]:
    """Rows in the official ANLI jsonl layout (labels e / n / c)."""
    return [
        {"uid": f"anli-{i}", "context": a, "hypothesis": b, "label": label[0], "reason": ""}
        for i, (a, b, label) in enumerate(pairs)
    ]


def squad_doc(articles, version: str) -> dict:
    data = []
    for title, context, qas in articles:
        items = []
        for k, (q, answer) in enumerate(qas):
            qa = {"id": f"{title}-{k}", "question": q, "answers": []}
            if answer is not None:
                qa["answers"] = [{"text": answer, "answer_start": context.index(answer)}]
            elif version == "v1.1":
                continue
            if version == "v2.0":
                qa["is_impossible"] = answer is None
            items.append(qa)
        data.append({"title": title, "paragraphs": [{"context": context, "qas": items}]})
    return {"version": version, "data": data}


def _glue_qqp(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"]
    for i, (a, b, y) in enumerate(rows):
        lines.append(f"{i}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}\t{y}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _cosmos_csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "context", "question", "answer0", "answer1", "answer2", "answer3", "label"])
    for i, (c, q, answers, y) in enumerate(rows):
        w.writerow([f"cosmos-{i}", c, q, *answers, y])
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _ccg(path: Path, sentences) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    blocks = ["\n".join(f"{w}\t{t}" for w, t in s) for s in sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def write_samples(root: str | Path) -> dict[str, list[Path]]:
    """Write every task's sample train and dev files under ``root/<task>/``.

    Returns:
        task name -> the files written.
    """
    root = Path(root)
    files: dict[str, list[Path]] = {}

    def add(task: str, path: Path) -> None:
        files.setdefault(task, []).append(path)

    d = root / "mnli"
    add("mnli", _jsonl(d / "multinli_1.0_train.jsonl", mnli_rows(NLI)))
    add("mnli", _jsonl(d / "multinli_1.0_dev_matched.jsonl", mnli_rows(NLI_DEV)))
    d = root / "anli_plus"
    for r in (1, 2, 3):
        add("anli_plus", _jsonl(d / f"anli_v1.0/R{r}/train.jsonl", anli_rows(NLI[r - 1 :: 3])))
        add("anli_plus", _jsonl(d / f"anli_v1.0/R{r}/dev.jsonl", anli_rows(NLI_DEV[r - 1 :: 3])))
    add("anli_plus", _jsonl(d / "multinli_1.0_train.jsonl", mnli_rows(NLI[:6])))
    add("anli_plus", _jsonl(d / "snli_1.0_train.jsonl", mnli_rows(NLI[6:], genre="snli")))
    add("qqp", _glue_qqp(root / "qqp" / "train.tsv", QQP))
    add("qqp", _glue_qqp(root / "qqp" / "dev.tsv", QQP_DEV))
    for task, version, suffix in (("squad_v1", "v1.1", "v1.1"), ("squad_v2", "v2.0", "v2.0")):
        d = root / task
        d.mkdir(parents=True, exist_ok=True)
        for split, arts in (("train", SQUAD), ("dev", SQUAD_DEV)):
            p = d / f"{split}-{suffix}.json"
            p.write_text(json.dumps(squad_doc(arts, version)), encoding="utf-8")
            add(task, p)
    for split, rows in (("train", HELLASWAG), ("val", HELLASWAG_DEV)):
        add(
            "hellaswag",
            _jsonl(
                root / "hellaswag" / f"hellaswag_{split}.jsonl",
                [
                    {
                        "ind": i,
                        "activity_label": "Everyday",
                        "ctx_a": a,
                        "ctx_b": b,
                        "ctx": f"{a} {b}",
                        "split": split,
                        "split_type": "indomain",
                        "endings": endings,
                        "label": y,
                        "source_id": f"sample-{i}",
                    }
                    for i, (a, b, endings, y) in enumerate(rows)
                ],
            ),
        )
    add("cosmosqa", _cosmos_csv(root / "cosmosqa" / "train.csv", COSMOS))
    add("cosmosqa", _cosmos_csv(root / "cosmosqa" / "valid.csv", COSMOS_DEV))
    for split, rows in (("train", CSQA), ("dev", CSQA_DEV)):
        add(
            "commonsenseqa",
            _jsonl(
                root / "commonsenseqa" / f"{split}_rand_split.jsonl",
                [
                    {
                        "answerKey": key,
                        "id": f"csqa-{split}-{i}",
                        "question": {
                            "question_concept": concept,
                            "choices": [
                                {"label": "ABCDE"[j], "text": t} for j, t in enumerate(choices)
                            ],
                            "stem": stem,
                        },
                    }
                    for i, (stem, choices, key, concept) in enumerate(rows)
                ],
            ),
        )
    add("ccg", _ccg(root / "ccg" / "ccg.train", CCG))
    add("ccg", _ccg(root / "ccg" / "ccg.dev", CCG_DEV))
    return files


def all_text() -> list[str]:
    """Every sentence of the samples (to train a toy tokenizer on)."""
    out = [t for a, b, _ in NLI + NLI_DEV for t in (a, b)]
    out += [t for a, b, _ in QQP + QQP_DEV for t in (a, b)]
    for _, ctx, qas in SQUAD + SQUAD_DEV:
        out.append(ctx)
        out += [q for q, _ in qas]
    for a, b, endings, _ in HELLASWAG + HELLASWAG_DEV:
        out += [a, b, *endings]
    for c, q, answers, _ in COSMOS + COSMOS_DEV:
        out += [c, q, *answers]
    for stem, choices, _, _ in CSQA + CSQA_DEV:
        out += [stem, *choices]
    out += [" ".join(w for w, _ in s) for s in CCG + CCG_DEV]
    return out


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) != 2:
        print("usage: python -m stilts.training.samples DIR", file=sys.stderr)
        sys.exit(2)
    for task, paths in write_samples(sys.argv[1]).items():
        print(task, *paths, sep="\n  ")
