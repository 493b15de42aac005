"""``stilts train``: STILTs intermediate-task training, then export into the encoder contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stilts.cliutil import env_flag
from stilts.training.cpu import AUTO, BF16_CHOICES, FREEZE_CHOICES  # light: numpy only
from stilts.training.tasks import NINE_TASKS, TASKS  # light: readers only, no torch
from stilts.training.trainer import LORA_TARGETS  # light: torch is imported inside train()

TASK_NAMES = tuple(TASKS)


def _int_or_auto(value: str) -> int | str:
    if value == AUTO:
        return AUTO
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {value!r}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from stilts.training.tasks import parse_file_overrides
    from stilts.training.trainer import TrainConfig, train

    cfg = TrainConfig(
        tasks=args.tasks.split(","),
        output=Path(args.output),
        model=args.model,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        train_files=parse_file_overrides(args.train_file, "train_file"),
        dev_files=parse_file_overrides(args.dev_file, "dev_file"),
        learning_rate=args.lr,
        batch_size=args.batch_size,
        eval_batch_size=args.eval_batch_size,
        max_seq_len=args.max_seq_len,
        epochs=args.epochs,
        max_steps=args.max_steps,
        warmup=args.warmup,
        max_grad_norm=args.max_grad_norm,
        weight_decay=args.weight_decay,
        grad_accum=args.grad_accum,
        eval_every=args.eval_every,
        save_every=args.save_every,
        save_every_minutes=args.save_every_minutes or None,
        save_total_limit=args.save_total_limit or None,
        log_every=args.log_every,
        seed=args.seed,
        freeze_embeddings=args.freeze_embeddings,
        sampling=args.sampling,
        sampling_cap=args.sampling_cap or None,
        max_train_examples=args.max_train_examples,
        max_eval_examples=args.max_eval_examples,
        doc_stride=args.doc_stride,
        bf16=args.bf16,
        fp16=args.fp16,
        gradient_checkpointing=args.gradient_checkpointing,
        num_workers=args.num_workers,
        threads=args.threads,
        resume=args.resume,
        layer=args.layer,
        name=args.name,
        export=not args.no_export,
        progress=not args.quiet,
        adapter=args.adapter,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_targets=[t.strip() for t in args.lora_targets.split(",") if t.strip()],
        init_adapter=args.init_adapter,
        bitext_scale=args.bitext_scale,
        bitext_margin=args.bitext_margin,
        bitext_queue=args.bitext_queue,
        group_by_length=args.group_by_length,
        language_sampling=args.language_sampling,
        bitext_passes=args.bitext_passes,
        measure_floor=args.measure_floor,
        distill=args.distill,
        distill_weight=args.distill_weight,
    )
    summary = train(cfg)
    print(json.dumps(summary, default=str))
    return 0


def _cmd_data_bitext(args: argparse.Namespace) -> int:
    from stilts.training.harvest import Filters, harvest

    langs = frozenset(x.strip() for x in args.languages.split(",") if x.strip()) or None
    summary = harvest(
        args.inputs,
        args.out,
        exclude=args.exclude or (),
        filters=Filters(args.min_chars, args.max_chars, args.max_ratio, langs),
        dev_fraction=args.dev_fraction,
        seed=args.seed,
        progress=not args.quiet,
    )
    brief = {k: summary[k] for k in ("catalogs_read", "pairs", "dropped", "catalogs_skipped")}
    print(json.dumps({"out": args.out, **brief, "languages": len(summary["languages"])}))
    return 0


def _register_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build training data")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data_sub.add_parser(
        "bitext",
        help="harvest translation pairs from gettext catalogs (dirs, .deb, .whl, .po/.mo)",
        description="Harvest (English msgid, translation) pairs from gettext catalogs: "
        "directories, .po/.mo files, Debian packages (`apt-get download PKG`; unpacked with "
        "dpkg-deb -x) and wheels. Cleans accelerators, drops untranslated, identical, "
        "placeholder-only and badly length-matched strings, texts of --exclude files, duplicates, "
        "and the catalogs of Django, Sphinx, Wagtail, Weblate, django-allauth, pretix and Gramps "
        "(reserved for independent evaluation), and refuses manpages-* packages (translated man "
        "pages, also reserved) before reading anything; splits train/dev by source text and writes "
        "OUT/pairs.tsv, OUT/dev.tsv (source, target, language, origin) and OUT/summary.json. "
        "Train on it with `stilts train --tasks bitext --data-dir PARENT` (OUT = PARENT/bitext).",
    )
    p.add_argument("inputs", nargs="+", help="directories, .deb, .whl, .po or .mo files")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATH",
        help="file or directory whose texts (every line and tab-separated field) must not occur "
        "on either side of a pair, e.g. an evaluation pack (repeatable)",
    )
    p.add_argument("--languages", default="", help="keep only these comma-separated languages")
    p.add_argument("--min-chars", type=int, default=3, help="shortest source string kept")
    p.add_argument("--max-chars", type=int, default=300, help="longest string kept (either side)")
    p.add_argument(
        "--max-ratio",
        type=float,
        default=3.0,
        help="largest length ratio of the two sides (wide CJK characters count twice)",
    )
    p.add_argument(
        "--dev-fraction", type=float, default=0.02, help="share of source texts held back for dev"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the dev split and the file order")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_bitext)
    _register_help(data_sub)


def _cmd_data_help(args: argparse.Namespace) -> int:
    from stilts.training.helpdocs import HelpFilters, harvest_help

    langs = frozenset(x.strip() for x in args.languages.split(",") if x.strip()) or None
    summary = harvest_help(
        args.inputs,
        args.out,
        args.dev_pack,
        exclude=args.exclude or (),
        filters=HelpFilters(args.min_chars, args.max_chars, args.max_ratio, langs),
        holdout_fraction=args.holdout_fraction,
        dev_fraction=args.dev_fraction,
        dev_min_pairs=args.dev_min_pairs,
        dev_max_pairs=args.dev_max_pairs,
        bucc_languages=[x.strip() for x in args.bucc_languages.split(",") if x.strip()],
        bucc_gold=args.bucc_gold,
        seed=args.seed,
        work=args.work,
        progress=not args.quiet,
    )
    pack = summary["dev_pack"]["languages"]
    brief = {
        "out": args.out,
        "dev_pack": args.dev_pack,
        "pairs": summary["pairs"],
        "dropped": summary["dropped"],
        "languages": len(summary["languages"]),
        "dev_pack_tatoeba": sorted(k for k, v in pack.items() if v["tatoeba"]),
        "dev_pack_bucc": sorted(k for k, v in pack.items() if v["bucc_gold"]),
    }
    print(json.dumps(brief))
    return 0


def _cmd_data_languages(args: argparse.Namespace) -> int:
    from stilts.training.helpdocs import language_report

    rows = language_report(args.summaries, args.language_sampling)
    if args.markdown:
        print(
            "| language | interface pairs | help pairs | pairs | share of pairs | "
            f"share of draws ({args.language_sampling}) |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['lang']} | {r['interface']:,} | {r['help']:,} | {r['pairs']:,} | "
                f"{100 * r['pair_share']:.3f}% | {100 * r['draw_share']:.3f}% |"
            )
    else:
        print(json.dumps(rows))
    return 0


def _register_help(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser(
        "help",
        help="harvest sentence pairs from translated help (LibreOffice, GNOME Mallard); hold out "
        "whole documents as a dev pack",
        description="Harvest (English, translation) sentence pairs from translated documentation: "
        "LibreOffice's help (libreoffice-help-<lang> + libreoffice-help-en-us; paragraphs aligned "
        "by id) and Mallard help pages (gnome-user-docs, applications' help under "
        "share/help/<lang>/; blocks aligned per section). Inputs are directories or Debian "
        "packages (`apt-get download PKG`; unpacked with dpkg-deb -x), read together. Markup is "
        "stripped, paragraphs split into sentences where both sides split alike; pairs are "
        "filtered by length and length ratio, script, English left in place, near-duplicates and "
        "closeness to the --exclude packs (whose sources.tsv packages are refused, as are "
        "manpages-*). Whole documents are held out as a dev pack (--dev-pack: "
        "tatoeba/<xx>-en.tsv and bucc/<xx>-en/, the layouts `stilts bench accuracy` reads) and "
        "never trained on; the rest is split by document into OUT/pairs.tsv and OUT/dev.tsv "
        "(source, target, language, origin) with OUT/summary.json.",
    )
    p.add_argument("inputs", nargs="+", help="directories or .deb packages holding help pages")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument(
        "--dev-pack",
        required=True,
        help="directory of the held-out documents' dev pack, e.g. help-dev (replaced atomically)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="PATH",
        help="evaluation pack (or file) whose texts, and texts with the same word set, must not "
        "occur on either side of a pair; packages in its sources.tsv are refused (repeatable)",
    )
    p.add_argument("--languages", default="", help="keep only these comma-separated languages")
    p.add_argument("--min-chars", type=int, default=10, help="shortest English text kept")
    p.add_argument("--max-chars", type=int, default=400, help="longest text kept (either side)")
    p.add_argument(
        "--max-ratio",
        type=float,
        default=2.5,
        help="largest length ratio of the two sides (wide CJK characters count twice)",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.08,
        help="share of documents (a page in all its languages) held out for the dev pack",
    )
    p.add_argument(
        "--dev-fraction",
        type=float,
        default=0.02,
        help="share of the other documents whose pairs go to dev.tsv (the trainer's dev metric)",
    )
    p.add_argument(
        "--dev-min-pairs",
        type=int,
        default=300,
        help="held-out pairs a language needs for a Tatoeba-style file (and BUCC gold pairs)",
    )
    p.add_argument(
        "--dev-max-pairs", type=int, default=1000, help="pairs per Tatoeba-style file, at most"
    )
    p.add_argument(
        "--bucc-languages",
        default="de,es,fr,ja,ru,zh",
        help="comma-separated languages that get a BUCC-style set when their held-out pairs allow",
    )
    p.add_argument("--bucc-gold", type=int, default=1000, help="gold pairs per BUCC-style set")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the file order")
    p.add_argument(
        "--work",
        default=None,
        help="directory for the unpacked packages (default: the system's temporary directory)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_data_help)

    p = data_sub.add_parser(
        "languages",
        help="training pairs per language and domain, and each language's share of the draws",
        description="Read the summary.json of `stilts data bitext` (interface strings) and "
        "`stilts data help` (help prose) harvests and print, per language, the training pairs of "
        "each domain and the share of the draws the language gets under --language-sampling "
        "(as `stilts train --language-sampling` draws them) beside its share of the pairs.",
    )
    p.add_argument(
        "summaries", nargs="+", help="summary.json files or the directories holding them"
    )
    p.add_argument(
        "--language-sampling",
        default="temperature:2",
        help="proportional, uniform or temperature:T, as for `stilts train`",
    )
    p.add_argument("--markdown", action="store_true", help="a Markdown table instead of JSON")
    p.set_defaults(func=_cmd_data_languages)


def register(sub: argparse._SubParsersAction) -> None:
    _register_data(sub)
    p = sub.add_parser(
        "train",
        help="STILTs intermediate-task training of an encoder, exported into the contract",
        description="Fine-tune an XLM-R-family encoder on intermediate tasks (one, several "
        "or all nine English tasks: " + ", ".join(NINE_TASKS) + "; and bitext, translation "
        "ranking on translation pairs), one head per task on a shared encoder (or a LoRA adapter), "
        "then save the encoder alone to OUTPUT/checkpoint and export it to OUTPUT/model, ready for "
        "`stilts encode`, `stilts mine`, `stilts serve` and `stilts bench`. Built on "
        "transformers.Trainer: run under `torchrun --nproc_per_node N -m stilts.cli train ...` "
        "for multi-GPU.",
    )
    env_flag(
        p,
        "--model",
        env="STILTS_TRAIN_MODEL",
        default="default",
        help="starting encoder: 'default' (the embedded model's transformers checkpoint), a "
        "checkpoint directory or a hub id such as xlm-roberta-large",
    )
    p.add_argument(
        "--tasks",
        required=True,
        help="comma-separated task names, or 'all' for the nine: " + ",".join(NINE_TASKS),
    )
    env_flag(
        p,
        "--data-dir",
        env="STILTS_TRAIN_DATA",
        default=None,
        help="directory with one folder per task holding the official files "
        "(e.g. mnli/multinli_1.0_train.jsonl, squad_v1/train-v1.1.json)",
    )
    p.add_argument("--output", required=True, help="run directory (checkpoints, metrics, model)")
    p.add_argument(
        "--train-file",
        action="append",
        metavar="TASK=PATH",
        help="training file for a task instead of --data-dir (repeat for several files)",
    )
    p.add_argument(
        "--dev-file",
        action="append",
        metavar="TASK=PATH",
        help="dev file for a task instead of --data-dir (repeat for several files)",
    )
    g = p.add_argument_group("recipe (defaults: the paper / jiant)")
    g.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (AdamW)")
    g.add_argument("--batch-size", type=int, default=32, help="examples per batch and device")
    g.add_argument("--eval-batch-size", type=int, default=None, help="dev batch (default 2x)")
    g.add_argument(
        "--max-seq-len",
        type=_int_or_auto,
        default="auto",
        help="tokens per sequence, or 'auto' (default): for bitext-only runs the 99th percentile "
        "of the training pairs' token lengths (rounded up to a multiple of 8, at most 128; "
        "longer pairs are cut), otherwise 256 (the paper's)",
    )
    g.add_argument("--epochs", type=float, default=3.0, help="passes over the (capped) data")
    g.add_argument(
        "--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)"
    )
    g.add_argument("--warmup", type=float, default=0.1, help="fraction of steps of linear warm-up")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--seed", type=int, default=42, help="random seed (heads, sampling, dropout)")
    g.add_argument(
        "--freeze-embeddings",
        nargs="?",
        const="all",
        default="auto",
        choices=FREEZE_CHOICES,
        help="what gets no gradient: 'word' the word-embedding table (250k rows, ~96M parameters "
        "of the default encoder; its gradient and optimizer update dominate a CPU step), 'all' "
        "the whole embedding layer (the flag alone), 'none'; 'auto' (default): word on CPU, none "
        "on GPU (LoRA freezes the whole base anyway)",
    )
    g.add_argument(
        "--sampling",
        default="proportional",
        help="multi-task sampling: proportional, uniform or temperature:T",
    )
    g.add_argument(
        "--language-sampling",
        default="proportional",
        help="bitext: how languages share a pass over the pairs: proportional (to their pairs), "
        "uniform, or temperature:T (p ~ pairs**(1/T); e.g. temperature:3 gives a language with "
        "100x fewer pairs 1/21 the share instead of 1/100, by repeating its pairs)",
    )
    g.add_argument(
        "--sampling-cap",
        type=int,
        default=0,
        help="cap on a task's size when weighting tasks and sizing an epoch (0: no cap)",
    )
    g.add_argument(
        "--doc-stride", type=int, default=128, help="SQuAD: context tokens shared by windows"
    )
    g.add_argument(
        "--bitext-scale",
        type=float,
        default=20.0,
        help="bitext: scale (inverse temperature) of the cosines in the ranking softmax",
    )
    g.add_argument(
        "--bitext-margin",
        type=float,
        default=0.2,
        help="bitext: additive margin subtracted from the translation pair's cosine",
    )
    g.add_argument(
        "--bitext-queue",
        type=int,
        default=0,
        metavar="N",
        help="bitext: also rank each pair against the last N sources and targets of earlier "
        "batches (no gradient through them; the same text drawn again is not a negative): a "
        "larger effective batch for the cost of a matrix product (0: in-batch negatives only)",
    )
    g.add_argument(
        "--group-by-length",
        type=int,
        default=50,
        metavar="N",
        help="bitext: draw batches from pools of N batches sorted by length, so each batch is "
        "padded little (batches are padded to their own longest pair in any case); 0: off",
    )
    g.add_argument(
        "--bitext-passes",
        type=int,
        choices=(1, 2),
        default=1,
        help="bitext: 1 (default) embeds both sides of a batch in one encoder pass, 2 in one "
        "pass per side",
    )
    g.add_argument(
        "--measure-floor",
        action="store_true",
        help="bitext: after training, time torch's GEMM rate on this machine and report the "
        "steps' arithmetic floor (FLOPs per step / GEMM rate) beside the measured s/step",
    )
    g.add_argument(
        "--distill",
        default=None,
        metavar="TEACHER",
        help="bitext: also pull each sentence vector towards a teacher's vector of the same "
        "sentence: 'default' (the tuned default model) or a checkpoint directory sharing the "
        "student's tokenizer. With --layer L below the starting model's depth this trains a "
        "shallower encoder (its first L layers) to stand in for the teacher",
    )
    g.add_argument(
        "--distill-weight",
        type=float,
        default=10.0,
        help="weight of the distillation loss (mean squared distance of unit vectors) beside "
        "the translation-ranking loss",
    )
    g = p.add_argument_group("adapter (train a small LoRA adapter on the frozen encoder)")
    g.add_argument(
        "--adapter",
        choices=["lora"],
        default=None,
        help="train a LoRA adapter (peft) instead of the whole encoder; it is saved to "
        "OUTPUT/adapter and merged into the base for the export",
    )
    g.add_argument("--lora-rank", type=int, default=8, help="LoRA rank R")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scale alpha/R)")
    g.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA input")
    g.add_argument(
        "--lora-targets",
        default=",".join(LORA_TARGETS),
        help="comma-separated module names to adapt (BERT/XLM-R: query,key,value,dense)",
    )
    g.add_argument(
        "--init-adapter",
        metavar="DIR",
        default=None,
        help="start the LoRA adapter from a saved one instead of zeros: a run's OUTPUT/adapter, "
        "or 'default' for the adapter this package ships (the tuned default); its rank, alpha "
        "and targets must be the ones given here, and the base model its own",
    )
    g = p.add_argument_group("run")
    g.add_argument(
        "--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end)"
    )
    g.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps")
    g.add_argument(
        "--save-every-minutes",
        type=float,
        default=0,
        metavar="N",
        help="also checkpoint once N minutes of wall-clock time have passed since the last save "
        "(0: off). Checkpoints are complete or ignored: a marker file is written last, --resume "
        "skips (and removes) a checkpoint a kill interrupted, and --save-total-limit deletes old "
        "ones only after the new one is complete",
    )
    g.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (0: keep all)")
    g.add_argument("--log-every", type=int, default=50, help="log the training loss every N steps")
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="continue the run in --output from its last complete checkpoint (or from this "
        "checkpoint): weights, optimizer, schedule, sampler position and RNG; the settings must "
        "match run.json. A long run goes in pieces: the same command under `timeout`, then again "
        "with --resume, with --save-every-minutes",
    )
    g.add_argument(
        "--max-train-examples", type=int, default=None, help="read at most N examples per task"
    )
    g.add_argument(
        "--max-eval-examples", type=int, default=None, help="evaluate at most N examples per task"
    )
    g.add_argument(
        "--bf16",
        nargs="?",
        const="on",
        default="auto",
        choices=BF16_CHOICES,
        help="bf16 mixed precision (autocast; CPU or GPU): 'on' (the flag alone), 'off', or "
        "'auto' (default): on where the hardware computes bf16 natively (a CPU with AMX or "
        "AVX-512 BF16, flags amx_bf16 / avx512_bf16 in /proc/cpuinfo; a bf16 GPU), fp32 "
        "elsewhere (emulated bf16 is slower)",
    )
    g.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    env_flag(
        g,
        "--threads",
        env="STILTS_THREADS",
        default=None,
        type=int,
        help="torch threads on CPU (default: the cores this process may use, "
        "os.sched_getaffinity; on a busy machine fewer is faster)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("export")
    g.add_argument(
        "--layer",
        type=int,
        default=None,
        help="hidden layer the exported encoder pools (default: the starting model's manifest, "
        "else the paper's middle layer: 14 of 24, scaled); a bitext-only run trains and exports "
        "only the layers up to it (an L-layer encoder)",
    )
    g.add_argument("--name", default=None, help="model name in the manifest")
    g.add_argument("--no-export", action="store_true", help="stop after saving OUTPUT/checkpoint")
    p.set_defaults(func=_cmd_train)
