"""``stilts train``: STILTs intermediate-task training, then export into the encoder contract."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stilts.cliutil import env_flag
from stilts.training.tasks import TASKS  # light: readers only, no torch

TASK_NAMES = tuple(TASKS)


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
    )
    summary = train(cfg)
    print(json.dumps(summary, default=str))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="STILTs intermediate-task training of an encoder, exported into the contract",
        description="Fine-tune an XLM-R-family encoder on English intermediate tasks (one, several "
        "or all nine: " + ", ".join(TASK_NAMES) + "), one head per task on a shared encoder, "
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
        help="comma-separated task names, or 'all' for the nine: " + ",".join(TASK_NAMES),
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
    g.add_argument("--max-seq-len", type=int, default=256, help="tokens per sequence")
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
        action="store_true",
        help="keep the embedding layer fixed (the 250k-row matrix dominates CPU step time)",
    )
    g.add_argument(
        "--sampling",
        default="proportional",
        help="multi-task sampling: proportional, uniform or temperature:T",
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
    g = p.add_argument_group("run")
    g.add_argument(
        "--eval-every", type=int, default=0, help="evaluate every N steps (0: at the end)"
    )
    g.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps")
    g.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept (0: keep all)")
    g.add_argument("--log-every", type=int, default=50, help="log the training loss every N steps")
    g.add_argument(
        "--resume",
        nargs="?",
        const="last",
        default=None,
        help="continue the run in --output from its last checkpoint (or from this checkpoint)",
    )
    g.add_argument(
        "--max-train-examples", type=int, default=None, help="read at most N examples per task"
    )
    g.add_argument(
        "--max-eval-examples", type=int, default=None, help="evaluate at most N examples per task"
    )
    g.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    g.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes")
    env_flag(
        g,
        "--threads",
        env="STILTS_THREADS",
        default=None,
        type=int,
        help="torch threads on CPU (default: all cores; on a busy machine fewer is faster)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("export")
    g.add_argument(
        "--layer",
        type=int,
        default=None,
        help="hidden layer the exported encoder pools (default: the starting model's manifest, "
        "else the paper's middle layer: 14 of 24, scaled)",
    )
    g.add_argument("--name", default=None, help="model name in the manifest")
    g.add_argument("--no-export", action="store_true", help="stop after saving OUTPUT/checkpoint")
    p.set_defaults(func=_cmd_train)
