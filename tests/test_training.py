"""stilts.training with a real (tiny, random) XLM-R: every head learns, Trainer runs resume exactly,
the export is in parity with PyTorch, and train -> export -> encode -> mine works through the CLI."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_toy_xlmr

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import Manifest, sha256_file
from stilts.training import samples
from stilts.training.tasks import TASKS

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The toy model gains nothing from intra-op threads, and on a shared CPU the spinning of idle
    OpenMP threads made each test ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stilts-tasks")
    samples.write_samples(root)
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """A raw 'MLM' checkpoint: a 2-layer, hidden-32 XLM-R with random weights, its tokenizer trained
    on the sample text."""
    return make_toy_xlmr(tmp_path_factory.mktemp("toy-xlmr"), samples.all_text())


def _config(toy: Path, data_dir: Path, output: Path, **kw):
    from stilts.training.trainer import TrainConfig

    base = dict(
        tasks=["mnli", "squad_v2", "hellaswag", "ccg"],
        output=output,
        model=str(toy),
        data_dir=data_dir,
        batch_size=4,
        max_seq_len=64,
        learning_rate=1e-3,
        max_steps=6,
        eval_every=3,
        save_every=3,
        log_every=1,
        export=False,
        progress=False,
        # the same numerics on every CPU (auto: bf16 where native) and one thread (see one_thread)
        bf16="off",
        threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def _tensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


# ---- heads ----


@pytest.mark.parametrize("task", ["mnli", "squad_v2", "hellaswag", "ccg"])
def test_every_head_overfits_one_batch(toy, data_dir, task):
    """Each head fits one batch of its task; evaluated on that batch, the metric is then 1."""
    import dataclasses

    from stilts.training.batches import COLLATE
    from stilts.training.data import load_task, read_examples
    from stilts.training.evaluation import evaluate_task
    from stilts.training.features import featurize
    from stilts.training.model import MultiTaskModel, load_encoder
    from stilts.training.tasks import resolve_files
    from stilts.training.text import TextTokenizer

    spec = TASKS[task]
    tok = TextTokenizer(toy / "tokenizer.json")
    td = load_task(spec, tok, data_dir, max_len=128)
    examples = read_examples(spec, resolve_files(spec, "train", data_dir))[:6]
    feats = featurize(spec, examples, tok, td.labels, 128)
    assert len(feats) == 6  # one SQuAD window per question at 128 tokens
    torch.manual_seed(0)
    model = MultiTaskModel(load_encoder(toy), {task: (spec.kind, td.num_labels)})
    model.eval()  # no dropout: one fixed batch must be fitted
    batch = COLLATE[spec.kind](task, feats, tok.pad_id).to_dict()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(**batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    with torch.no_grad():
        final = model(**batch)
    logits = final["logits"]
    if spec.kind == "span":
        assert torch.equal(logits[..., 0].argmax(-1), batch["start_positions"])
        assert torch.equal(logits[..., 1].argmax(-1), batch["end_positions"])
    elif spec.kind == "tagging":
        m = batch["labels"] != -100
        assert torch.equal(logits.argmax(-1)[m], batch["labels"][m])
    else:
        assert torch.equal(logits.argmax(-1), batch["labels"])
    # the model now reproduces the gold labels, so the evaluation must score it perfect
    fitted = dataclasses.replace(td, dev_examples=examples, dev_features=feats)
    result = evaluate_task(model, fitted, 6, "cpu", tok.pad_id)
    score = result["exact_match"] if spec.kind == "span" else result["accuracy"]
    assert score == 1.0 and result["n"] == 6
    assert result["loss"] == pytest.approx(final["loss"].item(), rel=1e-4)


def test_freeze_embeddings_leaves_only_the_embeddings_fixed(toy):
    from stilts.training.model import MultiTaskModel, load_encoder

    model = MultiTaskModel(load_encoder(toy), {"mnli": ("classification", 3)}, True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("encoder.embeddings.") for n in frozen)
    assert "encoder.embeddings.word_embeddings.weight" in frozen
    assert any(p.requires_grad for n, p in model.named_parameters() if "encoder.layer" in n)


# ---- Trainer runs ----


@pytest.fixture(scope="module")
def run_a(toy, data_dir, tmp_path_factory):
    """Four tasks in four formats, 6 steps, checkpoints and evaluations at steps 3 and 6."""
    from stilts.training.trainer import train

    out = tmp_path_factory.mktemp("run") / "a"
    summary = train(_config(toy, data_dir, out))
    return out, summary


def test_multitask_run_logs_metrics_per_evaluation(run_a):
    out, summary = run_a
    assert summary["steps"] == 6 and summary["steps_timed"] == 6
    assert summary["seconds_per_step_mean"] > 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6]
    run = json.loads((out / "run.json").read_text())
    assert sum(run["task_probabilities"].values()) == pytest.approx(1.0)
    assert run["labels"]["mnli"] == ["entailment", "neutral", "contradiction"]
    assert run["labels"]["ccg"][0] == "N"  # most frequent tag first
    for x in lines:
        assert set(x["tasks"]) == {"mnli", "squad_v2", "hellaswag", "ccg"}
        assert {k: v["n"] for k, v in x["tasks"].items()} == {
            "mnli": 4,
            "squad_v2": 3,
            "hellaswag": 2,
            "ccg": 2,
        }
        for res in x["tasks"].values():
            assert np.isfinite(res["loss"])
        # three optimizer steps of one batch each between evaluations
        assert sum(x["train_batches"].values()) == 3
        assert set(x["train_loss"]) == set(x["train_batches"]) <= set(x["tasks"])
        assert all(np.isfinite(v) and v > 0 for v in x["train_loss"].values())
        assert 0 <= x["tasks"]["mnli"]["accuracy"] <= 1
        assert {"exact_match", "f1", "no_answer_f1"} <= set(x["tasks"]["squad_v2"])
    assert summary["last_eval"]["tasks"] == lines[-1]["tasks"]
    ckpt = out / "checkpoint"
    assert Manifest.load(ckpt).training["steps"] == 6
    assert not (out / "model").exists()  # export=False


def test_resume_continues_where_it_stopped(run_a, toy, data_dir, tmp_path):
    """A run stopped after its step-3 checkpoint and resumed ends with the same weights and
    metrics as the uninterrupted run (the batch order, dropout and schedule all resume)."""
    from stilts.training.trainer import train

    a, _ = run_a
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "trainer" / "checkpoint-6")
    shutil.rmtree(b / "checkpoint")
    # metrics.jsonl still has the step-6 evaluation (made just before the lost checkpoint):
    # the resumed run must replace it, not log step 6 twice.

    summary = train(_config(toy, data_dir, b, resume="last"))
    assert summary["steps"] == 6
    assert summary["steps_timed"] == 3  # only steps 4-6 ran
    wa = _tensors(a / "trainer" / "checkpoint-6" / "model.safetensors")
    wb = _tensors(b / "trainer" / "checkpoint-6" / "model.safetensors")
    assert wa.keys() == wb.keys() and any(k.startswith("heads.ccg") for k in wa)
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-6, err_msg=k)
    la = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lb] == [3, 6]
    for task, res in la[1]["tasks"].items():
        assert lb[1]["tasks"][task] == pytest.approx(res, abs=1e-5)
    assert lb[1]["train_batches"] == la[1]["train_batches"]
    assert lb[1]["train_loss"] == pytest.approx(la[1]["train_loss"], abs=1e-5)


def test_resume_and_output_guards(run_a, toy, data_dir, tmp_path):
    from stilts.training.trainer import train

    a, _ = run_a
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, a))
    assert e.value.code == ErrorCode.ALREADY_EXISTS and "--resume" in str(e.value)
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, a, resume="last", learning_rate=2e-3))
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and e.value.field == "learning_rate"
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, tmp_path / "empty", resume="last"))
    assert e.value.code == ErrorCode.NOT_FOUND and e.value.field == "resume"
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, tmp_path / "x", max_seq_len=512))
    assert e.value.field == "max_seq_len" and "128 positions" in str(e.value)
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, tmp_path / "y", warmup=1.5))
    assert e.value.field == "warmup"


def test_save_every_minutes_writes_complete_checkpoints_and_logs_progress(
    toy, data_dir, tmp_path, caplog
):
    """Time-based checkpoints (here due after every step), each marked complete; the log shows
    steps/s, the ETA and the last dev metric."""
    from stilts.training import checkpoints
    from stilts.training.trainer import train

    out = tmp_path / "timed"
    with caplog.at_level(logging.INFO, logger="stilts.training.trainer"):
        summary = train(
            _config(
                toy,
                data_dir,
                out,
                tasks=["mnli"],
                max_steps=4,
                eval_every=2,
                save_every=1000,
                save_every_minutes=1e-7,
                save_total_limit=None,
            )
        )
    assert summary["steps"] == 4
    found = checkpoints.checkpoints(out / "trainer")
    assert [(step, ok) for step, _, ok in found] == [(1, True), (2, True), (3, True), (4, True)]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert "train_runtime" in lines.pop()  # the run's closing summary
    assert [x.split(":")[0] for x in lines] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert all(re.search(r"[0-9.]+ steps/s, ETA \d+:\d\d:\d\d", x) for x in lines), lines
    assert "dev -" in lines[0]  # logged before the first evaluation (step 2)
    acc = summary["last_eval"]["tasks"]["mnli"]["accuracy"]
    assert "ETA 0:00:00" in lines[3] and "dev mnli:accuracy=" in lines[3]
    assert re.search(r"dev mnli:accuracy=([0-9.]+)", lines[2]) is not None
    # rotation keeps the newest complete ones and drops incomplete leftovers
    shutil.copytree(found[0][1], out / "trainer" / "checkpoint-9")
    (out / "trainer" / "checkpoint-9" / checkpoints.COMPLETE).unlink()
    checkpoints.rotate(out / "trainer", 2, out / "trainer" / "checkpoint-4")
    assert [s for s, _, _ in checkpoints.checkpoints(out / "trainer")] == [3, 4]
    assert 0 <= acc <= 1


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(run_a, toy, data_dir, tmp_path):
    """A kill during the save of step 6 left checkpoint-6 without its optimizer and marker (its
    trainer_state.json, which transformers' own search looks for, was written): --resume takes
    checkpoint-3, removes the broken one and still ends with the uninterrupted run's weights."""
    from stilts.training import checkpoints
    from stilts.training.trainer import _last_checkpoint, train

    a, _ = run_a
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoint")
    broken = b / "trainer" / "checkpoint-6"
    (broken / checkpoints.COMPLETE).unlink()
    (broken / "optimizer.pt").unlink()
    assert (broken / "trainer_state.json").is_file()
    assert _last_checkpoint(b / "trainer") == str(b / "trainer" / "checkpoint-3")
    with pytest.raises(StiltsError) as e:
        train(_config(toy, data_dir, b, resume=str(broken)))
    assert e.value.code == ErrorCode.FAILED_PRECONDITION and e.value.field == "resume"
    assert "incomplete" in str(e.value)

    summary = train(_config(toy, data_dir, b, resume="last"))
    assert summary["steps"] == 6 and summary["steps_timed"] == 3
    assert checkpoints.is_complete(broken)  # written again, whole
    wa = _tensors(a / "trainer" / "checkpoint-6" / "model.safetensors")
    wb = _tensors(broken / "model.safetensors")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-6, err_msg=k)


def test_resuming_a_finished_run_takes_no_extra_step(run_a, toy, data_dir, tmp_path):
    """A run whose last checkpoint is its last step (its export failed or was cut) resumes into
    the final save only: no step 7, the same weights, the last evaluation kept."""
    from stilts.training.trainer import train

    a, _ = run_a
    b = tmp_path / "b"
    shutil.copytree(a, b)
    shutil.rmtree(b / "checkpoint")
    summary = train(_config(toy, data_dir, b, resume="last"))
    assert summary["steps"] == 6 and summary["steps_timed"] == 0
    assert sorted(p.name for p in (b / "trainer").iterdir()) == ["checkpoint-3", "checkpoint-6"]
    assert summary["last_eval"]["step"] == 6
    wa = _tensors(a / "checkpoint" / "model.safetensors")
    wb = _tensors(b / "checkpoint" / "model.safetensors")
    for k in wa:
        np.testing.assert_allclose(wb[k], wa[k], atol=1e-6, err_msg=k)
    assert Manifest.load(b / "checkpoint").training["steps"] == 6


def test_cpu_recipe_defaults_bf16_on_and_threads_restored(toy, data_dir, tmp_path):
    """--bf16 on trains under CPU autocast; threads default to the affinity mask and are put
    back after the run; the word-embedding table gets no gradient on CPU by default."""
    from stilts.training.cpu import available_cores
    from stilts.training.trainer import train

    before = torch.get_num_threads()
    out = tmp_path / "bf16"
    summary = train(
        _config(
            toy,
            data_dir,
            out,
            tasks=["mnli"],
            max_steps=2,
            eval_every=2,
            save_every=2,
            bf16="on",
            threads=None,
            max_seq_len="auto",
            freeze_embeddings="auto",
        )
    )
    assert torch.get_num_threads() == before
    recipe = summary["recipe"]
    assert recipe["bf16"] is True and recipe["threads"] == available_cores()
    assert recipe["freeze_embeddings"] == "word"
    assert recipe["max_seq_len"] == 128  # auto: 256, within the toy's 128 positions
    assert np.isfinite(summary["train_loss"])
    w0 = _tensors(toy / "model.safetensors")
    w1 = _tensors(out / "trainer" / "checkpoint-2" / "model.safetensors")

    def one(w, suffix):
        return next(v for k, v in w.items() if k.endswith(suffix))

    word, pos = "word_embeddings.weight", "position_embeddings.weight"
    np.testing.assert_array_equal(one(w1, word), one(w0, word))
    assert not np.allclose(one(w1, pos), one(w0, pos))  # the rest of the layer trains
    assert json.loads((out / "run.json").read_text())["recipe"] == recipe


# ---- export ----


def _torch_pooled(checkpoint: Path, ids: list[np.ndarray], layer: int) -> np.ndarray:
    """Reference: hidden_states[layer] of the PyTorch checkpoint, mean-pooled and normalised."""
    model = transformers.AutoModel.from_pretrained(str(checkpoint)).eval()
    out = []
    with torch.no_grad():
        for x in ids:
            t = torch.from_numpy(np.asarray(x, dtype=np.int64))[None]
            h = model(input_ids=t, output_hidden_states=True).hidden_states[layer][0]
            v = h.mean(0)
            out.append((v / v.norm()).numpy())
    return np.stack(out)


def test_trained_encoder_exports_in_parity_with_pytorch(toy, data_dir, tmp_path):
    from stilts import Encoder
    from stilts.graphs.export import export_checkpoint as core_export
    from stilts.training.trainer import train

    out = tmp_path / "run"
    summary = train(
        _config(
            toy,
            data_dir,
            out,
            tasks=["qqp", "commonsenseqa"],
            max_steps=3,
            eval_every=0,
            freeze_embeddings=True,
            export=True,
        )
    )
    ckpt, model_dir = out / "checkpoint", out / "model"
    assert summary["model"] == str(model_dir)
    m = Manifest.load(model_dir)
    # a raw MLM checkpoint: mean pooling of the paper's middle layer, round(2 * 14 / 24) = 1
    assert (m.pooling, m.layer, m.num_layers, m.dim) == ("mean", 1, 2, 32)
    assert m.name == f"{toy.name}-stilts-qqp+commonsenseqa"
    t = m.training
    assert t["tasks"] == ["qqp", "commonsenseqa"] and t["steps"] == 3
    assert t["freeze_embeddings"] == "all"
    for task in ("qqp", "commonsenseqa"):
        for item in t["data_files"][task]["train"] + t["data_files"][task]["dev"]:
            assert item["sha256"] == sha256_file(item["path"])
    assert set(t["dev_metrics"]) == {"qqp", "commonsenseqa"}

    texts = ["A man is playing a guitar.", "Where do fish live?", "Ein Mann spielt Gitarre.", ""]
    enc = Encoder(model_dir, precision="fp32")
    got = enc.encode(texts, kind="bitext")
    want = _torch_pooled(ckpt, [x.ids for x in enc.tokenize(texts, "bitext")], layer=1)
    assert np.abs(got - want).max() < 1e-4
    int8 = Encoder(model_dir, precision="int8").encode(texts, kind="bitext")
    assert float(np.sum(int8 * got, 1).mean()) >= 0.99

    # embeddings frozen, the layers trained
    w0, w1 = _tensors(toy / "model.safetensors"), _tensors(ckpt / "model.safetensors")
    emb = next(k for k in w0 if k.endswith("word_embeddings.weight"))
    np.testing.assert_array_equal(w1[emb], w0[emb])
    q = next(k for k in w0 if k.endswith("layer.0.attention.self.query.weight"))
    assert not np.allclose(w1[q], w0[q])

    # `stilts export --checkpoint OUTPUT/checkpoint` reproduces the model's manifest
    again = core_export(ckpt, tmp_path / "again")
    for field in ("name", "layer", "pooling", "prefixes", "max_len", "training"):
        assert getattr(again, field) == getattr(m, field), field


def test_starting_manifest_default_encoder_and_raw_checkpoints(toy):
    from stilts.graphs.export import default_layer
    from stilts.sources.default_model import checkpoint_dir
    from stilts.training.finalize import base_manifest

    raw = base_manifest(toy, 2, 32)
    assert (raw.pooling, raw.layer, raw.prefixes["query"]) == ("mean", 1, "")
    assert default_layer(24) == 14 and default_layer(12) == 7
    ckpt = checkpoint_dir()
    if not (ckpt / "stilts.json").is_file():
        if IN_CI:
            pytest.fail(f"the default checkpoint is missing at {ckpt} (CI=true)")
        pytest.skip(f"the default checkpoint is not installed at {ckpt}")
    m = base_manifest(ckpt, 12, 384)
    assert (m.pooling, m.layer, m.dim) == ("mean", 12, 384)
    assert m.prefixes == {"query": "query: ", "passage": "passage: ", "bitext": ""}


# ---- CLI ----


def test_cli_train_rejects_bad_input_naming_the_field(toy, data_dir, tmp_path, capsys):
    from stilts.cli import main

    common = ["train", "--model", str(toy), "--output", str(tmp_path / "o")]
    cases = [
        (["--tasks", "mnli,nope", "--data-dir", str(data_dir)], "unknown task 'nope'"),
        (["--tasks", "mnli", "--data-dir", str(tmp_path)], str(tmp_path / "mnli")),
        (["--tasks", "mnli", "--data-dir", str(data_dir), "--lr", "0"], "learning_rate"),
        (
            ["--tasks", "mnli", "--data-dir", str(data_dir), "--sampling", "temperature:0"],
            "sampling",
        ),
        (["--tasks", "mnli", "--train-file", "mnli"], "TASK=PATH"),
        (["--tasks", "mnli", "--data-dir", str(data_dir), "--max-seq-len", "8"], "max_seq_len"),
        (["--tasks", "mnli", "--data-dir", str(data_dir), "--max-seq-len", "x"], "'auto'"),
        (["--tasks", "mnli", "--data-dir", str(data_dir), "--bf16", "maybe"], "--bf16"),
        (
            ["--tasks", "mnli", "--data-dir", str(data_dir), "--save-every-minutes", "-1"],
            "save_every_minutes",
        ),
    ]
    for args, what in cases:
        try:
            rc = main(common + args)
        except SystemExit as e:  # argparse rejects a value before main's error handling
            rc = e.code
        assert rc == 2, args
        assert what in capsys.readouterr().err, args
    assert (
        main(
            [
                "train",
                "--model",
                str(tmp_path / "nomodel"),
                "--tasks",
                "mnli",
                "--data-dir",
                str(data_dir),
                "--output",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    assert "no such model directory" in capsys.readouterr().err


def _bucc_sample(dev_pack: Path, n: int) -> tuple[list[str], list[str]]:
    d = dev_pack / "bucc" / "de-en"
    gold = [line.split("\t") for line in (d / "de-en.training.gold").read_text().splitlines()]
    de = dict(line.split("\t", 1) for line in (d / "de-en.training.de").read_text().splitlines())
    en = dict(line.split("\t", 1) for line in (d / "de-en.training.en").read_text().splitlines())
    pairs = gold[:n]
    return [f"{a}\t{de[a]}" for a, _ in pairs], [f"{b}\t{en[b]}" for _, b in pairs]


def test_cli_train_export_encode_mine(toy, data_dir, dev_pack, tmp_path, capsys):
    """train (a few steps) -> export -> encode -> mine on a dev-pack sample, all through the CLI."""
    from stilts import Encoder
    from stilts.cli import main

    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model", str(toy),
            "--tasks", "mnli,squad_v1,cosmosqa,ccg",
            "--data-dir", str(data_dir),
            "--output", str(out),
            "--max-steps", "4",
            "--batch-size", "4",
            "--max-seq-len", "64",
            "--lr", "1e-3",
            "--sampling", "uniform",
            "--layer", "2",
            "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model_dir = Path(summary["model"])
    m = Manifest.load(model_dir)
    assert m.layer == 2 and m.training["sampling"] == "uniform"
    assert m.training["tasks"] == ["mnli", "squad_v1", "cosmosqa", "ccg"]

    src_lines, tgt_lines = _bucc_sample(dev_pack, 40)
    src, tgt = tmp_path / "src.tsv", tmp_path / "tgt.tsv"
    src.write_text("\n".join(src_lines) + "\n")
    tgt.write_text("\n".join(tgt_lines) + "\n")
    npy = tmp_path / "src.npy"
    rc = main(["encode", "--model", str(model_dir), "--input", str(src), "--output", str(npy),
               "--kind", "bitext", "--precision", "fp32", "--quiet"])  # fmt: skip
    assert rc == 0
    vecs = np.load(npy)
    assert vecs.shape == (40, 32)
    texts = [x.split("\t", 1)[1] for x in src_lines]
    ref = Encoder(model_dir, precision="fp32").encode(texts, kind="bitext")
    np.testing.assert_allclose(vecs, ref, atol=1e-6)
    capsys.readouterr()

    pairs = tmp_path / "pairs.tsv"
    rc = main(["mine", str(src), str(tgt), "--output", str(pairs), "--model", str(model_dir)])
    assert rc == 0, capsys.readouterr().err
    # score<TAB>src id<TAB>tgt id (the inputs are id<TAB>sentence, as BUCC), best first
    rows = [r.split("\t") for r in pairs.read_text().splitlines() if r.strip()]
    assert rows, "mining wrote no pairs"
    src_ids = {x.split("\t")[0] for x in src_lines}
    tgt_ids = {x.split("\t")[0] for x in tgt_lines}
    scores = [float(r[0]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(len(r) == 3 and r[1] in src_ids and r[2] in tgt_ids for r in rows), rows[:3]


@pytest.mark.slow
def test_torchrun_two_processes_form_one_ddp_job(toy, data_dir, tmp_path):
    """`torchrun --nproc_per_node 2` on CPU (gloo): one job of world size 2, batches split
    between the processes, one metrics log, one export by the first process."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    cmd = [
        str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "stilts.cli", "train",
        "--model", str(toy), "--tasks", "mnli,squad_v2,hellaswag,ccg",
        "--data-dir", str(data_dir), "--output", str(out),
        "--max-steps", "4", "--batch-size", "4", "--max-seq-len", "64", "--lr", "1e-3",
        "--eval-every", "2", "--save-every", "2", "--threads", "1", "--quiet",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = Manifest.load(out / "model")
    assert m.training["world_size"] == 2 and m.training["steps"] == 4
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    # each process takes every other batch of the epoch
    per_epoch = json.loads((out / "run.json").read_text())["batches_per_epoch"]
    assert lines[-1]["epoch"] == pytest.approx(4 / -(-per_epoch // 2))
