"""STILTs training on ``transformers.Trainer``: single or multi-task, checkpoints, resume, export.

The library supplies the training loop: ``torchrun`` multi-GPU (DDP), bf16/fp16, gradient
accumulation, the linear warm-up schedule, gradient clipping, checkpoints with optimizer / scheduler /
RNG state. This module adds the multi-task batch sampler, the per-task evaluation with its metrics
log, and the final save + export into the encoder contract.

Output directory::

    OUTPUT/run.json          the run's settings, task labels and data files (checked on --resume)
    OUTPUT/trainer/          Trainer checkpoints (checkpoint-N: encoder + heads + optimizer state)
    OUTPUT/metrics.jsonl     one JSON line per evaluation
    OUTPUT/adapter/          with --adapter lora: the LoRA adapter alone (peft) + stilts-adapter.json
    OUTPUT/checkpoint/       the trained encoder alone (transformers) + tokenizer.json + stilts.json
                             (with an adapter: the base with the adapter merged in)
    OUTPUT/model/            the exported model directory (ONNX fp32 + int8, manifest)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_write_text
from stilts.training import checkpoints
from stilts.training.cpu import AUTO, BF16_CHOICES, FREEZE_CHOICES

LOG = logging.getLogger(__name__)

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
TRAINER_DIR = "trainer"
CHECKPOINT_DIR = "checkpoint"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
ADAPTERS = ("lora",)
# BERT / XLM-R linear layers: attention projections, attention output, feed-forward in and out.
LORA_TARGETS = ("query", "key", "value", "dense")
_REGEX = re.compile(r"[\\.*+?()|\[\]^$]")
# Settings a resumed run must share with the interrupted one.
RESUME_KEYS = (
    "model",
    "tasks",
    "max_seq_len",
    "batch_size",
    "grad_accum",
    "learning_rate",
    "seed",
    "sampling",
    "sampling_cap",
    "freeze_embeddings",
    "max_train_examples",
    "adapter",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "init_adapter",
    "bitext_scale",
    "bitext_margin",
    "bitext_queue",
    "group_by_length",
    "language_sampling",
)


@dataclasses.dataclass
class TrainConfig:
    """Settings of a ``stilts train`` run (defaults: the paper / jiant recipe).

    Attributes:
        model: ``default`` (the embedded encoder's transformers checkpoint), a checkpoint
            directory or a hub id.
        tasks: task names (see :data:`stilts.training.tasks.TASKS`).
        output: run directory.
        data_dir: one folder per task with the official files.
        train_files / dev_files: per-task file overrides.
        learning_rate, batch_size, max_seq_len, epochs, warmup, max_grad_norm: the recipe
            (1e-5, 32, 256, 3, 0.1, 1.0); ``max_seq_len`` ``auto``: from the data for bitext-only
            runs (:func:`stilts.training.cpu.auto_max_len`), else 256.
        max_steps: optimizer steps (overrides ``epochs``).
        eval_every: evaluate every N steps (0: only at the end).
        save_every: checkpoint every N steps (and at the end).
        save_every_minutes: also checkpoint once this many minutes of wall-clock time have passed
            since the last save (None: off). Checkpoints are complete or ignored
            (:mod:`stilts.training.checkpoints`).
        freeze_embeddings: ``word`` (no gradient for the word-embedding table), ``all`` (the
            embedding layer), ``none``, or ``auto`` (``word`` on CPU, ``none`` on GPU); a bool is
            the old flag (all / none).
        sampling: ``proportional``, ``uniform`` or ``temperature:T``.
        sampling_cap: cap on a task's size when weighting tasks (None: no cap).
        language_sampling: within a bitext task, languages drawn ``proportional`` to their
            pairs, ``uniform`` or ``temperature:T`` (small languages' pairs repeated).
        max_train_examples / max_eval_examples: read at most N examples per task and split.
        threads: torch intra-op threads on CPU (None: the cores this process may use); restored
            when :func:`train` returns.
        bf16: ``auto`` (bf16 autocast where the device computes bf16 natively: AMX / AVX-512 BF16
            CPUs, bf16 GPUs), ``on`` or ``off`` (a bool is the old flag).
        group_by_length: bitext: batches drawn from pools of this many batches sorted by length
            (less padding); 0 or 1: off.
        bitext_passes: bitext: 1 embeds both sides of the batch in one encoder pass, 2 in one
            pass per side.
        measure_floor: bitext: time the machine's GEMM rate after training and report the
            steps' arithmetic floor (:mod:`stilts.training.flops`) in the summary.
        resume: continue from the last checkpoint in ``output`` (or this checkpoint path).
        layer: hidden layer the exported encoder pools (default: the starting model's manifest,
            else the paper's middle layer).
        name: model name in the exported manifest.
        export: export ``OUTPUT/model`` at the end.
        adapter: ``lora`` trains a LoRA adapter (peft) on the frozen encoder instead of the
            whole encoder; None trains the encoder itself.
        lora_rank / lora_alpha / lora_dropout / lora_targets: the LoRA settings (targets: module
            name suffixes, default :data:`LORA_TARGETS`).
        init_adapter: start the LoRA adapter from this saved one (``default``: the shipped
            adapter) instead of zeros; None: a new adapter.
        bitext_scale / bitext_margin: the bitext task's scale and additive margin.
        bitext_queue: earlier batches' vectors the bitext task also ranks against (0: none).
        distill / distill_weight: bitext: a teacher (``default``: the tuned default; or a
            checkpoint directory) whose vectors the student's are pulled towards, and the weight
            of that loss (:mod:`stilts.training.distill`). None: no teacher.
    """

    tasks: list[str]
    output: Path
    model: str = "default"
    data_dir: Path | None = None
    train_files: dict[str, list[Path]] = dataclasses.field(default_factory=dict)
    dev_files: dict[str, list[Path]] = dataclasses.field(default_factory=dict)
    learning_rate: float = 1e-5
    batch_size: int = 32
    eval_batch_size: int | None = None
    max_seq_len: int | str = "auto"
    epochs: float = 3.0
    max_steps: int | None = None
    warmup: float = 0.1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    grad_accum: int = 1
    eval_every: int = 0
    save_every: int = 1000
    save_every_minutes: float | None = None
    save_total_limit: int | None = 2
    log_every: int = 50
    seed: int = 42
    freeze_embeddings: str | bool = "auto"
    sampling: str = "proportional"
    sampling_cap: int | None = None
    language_sampling: str = "proportional"
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    doc_stride: int = 128
    bf16: str | bool = "auto"
    fp16: bool = False
    gradient_checkpointing: bool = False
    num_workers: int = 0
    threads: int | None = None
    resume: str | None = None
    layer: int | None = None
    name: str | None = None
    export: bool = True
    progress: bool = True
    adapter: str | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: list[str] = dataclasses.field(default_factory=lambda: list(LORA_TARGETS))
    init_adapter: str | None = None
    bitext_scale: float = 20.0
    bitext_margin: float = 0.2
    bitext_queue: int = 0
    group_by_length: int = 50
    bitext_passes: int = 1
    measure_floor: bool = False
    distill: str | None = None
    distill_weight: float = 10.0

    def __post_init__(self):
        # the old boolean flags
        if isinstance(self.bf16, bool):
            self.bf16 = "on" if self.bf16 else "off"
        if isinstance(self.freeze_embeddings, bool):
            self.freeze_embeddings = "all" if self.freeze_embeddings else "none"

    def validate(self) -> None:
        """Raise INVALID_ARGUMENT naming the first bad setting."""
        checks = [
            ("learning_rate", self.learning_rate > 0, "must be > 0"),
            ("batch_size", self.batch_size >= 1, "must be >= 1"),
            (
                "eval_batch_size",
                self.eval_batch_size is None or self.eval_batch_size >= 1,
                "must be >= 1",
            ),
            (
                "max_seq_len",
                self.max_seq_len == AUTO
                or (isinstance(self.max_seq_len, int) and self.max_seq_len >= 16),
                "must be 'auto' or >= 16",
            ),
            ("epochs", self.epochs > 0, "must be > 0"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "must be >= 1"),
            ("warmup", 0 <= self.warmup < 1, "must be in [0, 1)"),
            ("max_grad_norm", self.max_grad_norm >= 0, "must be >= 0"),
            ("weight_decay", self.weight_decay >= 0, "must be >= 0"),
            ("grad_accum", self.grad_accum >= 1, "must be >= 1"),
            ("eval_every", self.eval_every >= 0, "must be >= 0"),
            ("save_every", self.save_every >= 1, "must be >= 1"),
            (
                "save_every_minutes",
                self.save_every_minutes is None or self.save_every_minutes > 0,
                "must be > 0",
            ),
            ("group_by_length", self.group_by_length >= 0, "must be >= 0"),
            ("bitext_passes", self.bitext_passes in (1, 2), "must be 1 or 2"),
            ("bf16", self.bf16 in BF16_CHOICES, f"must be one of {BF16_CHOICES}"),
            (
                "freeze_embeddings",
                self.freeze_embeddings in FREEZE_CHOICES,
                f"must be one of {FREEZE_CHOICES}",
            ),
            ("log_every", self.log_every >= 1, "must be >= 1"),
            ("sampling_cap", self.sampling_cap is None or self.sampling_cap >= 1, "must be >= 1"),
            (
                "max_train_examples",
                self.max_train_examples is None or self.max_train_examples >= 1,
                "must be >= 1",
            ),
            (
                "max_eval_examples",
                self.max_eval_examples is None or self.max_eval_examples >= 1,
                "must be >= 1",
            ),
            ("doc_stride", self.doc_stride >= 0, "must be >= 0"),
            ("threads", self.threads is None or self.threads >= 1, "must be >= 1"),
            ("bf16", not (self.bf16 == "on" and self.fp16), "bf16 and fp16 exclude each other"),
            ("adapter", self.adapter in (None, *ADAPTERS), f"must be one of {ADAPTERS}"),
            ("lora_rank", self.lora_rank >= 1, "must be >= 1"),
            ("lora_alpha", self.lora_alpha > 0, "must be > 0"),
            ("lora_dropout", 0 <= self.lora_dropout < 1, "must be in [0, 1)"),
            ("lora_targets", bool(self.lora_targets), "must name at least one module"),
            ("init_adapter", not self.init_adapter or self.adapter, "needs --adapter lora"),
            ("bitext_scale", self.bitext_scale > 0, "must be > 0"),
            ("bitext_margin", self.bitext_margin >= 0, "must be >= 0"),
            ("bitext_queue", self.bitext_queue >= 0, "must be >= 0"),
            ("distill_weight", self.distill_weight > 0, "must be > 0"),
        ]
        for field, ok, message in checks:
            if not ok:
                raise StiltsError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"{field} {message}, got {getattr(self, field)!r}",
                    field=field,
                )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["output"] = str(self.output)
        d["data_dir"] = str(self.data_dir) if self.data_dir else None
        d["train_files"] = {k: [str(p) for p in v] for k, v in self.train_files.items()}
        d["dev_files"] = {k: [str(p) for p in v] for k, v in self.dev_files.items()}
        return d


def _last_checkpoint(trainer_dir: Path) -> str | None:
    """The newest complete checkpoint (one a kill interrupted while saving is skipped)."""
    last = checkpoints.last_complete(trainer_dir)
    return str(last) if last is not None else None


def _resume_point(cfg: TrainConfig) -> str | None:
    """The Trainer checkpoint to resume from, or None for a fresh run (which must not clobber)."""
    trainer_dir = cfg.output / TRAINER_DIR
    last = _last_checkpoint(trainer_dir)
    if cfg.resume is None:
        if last is not None:
            raise StiltsError(
                ErrorCode.ALREADY_EXISTS,
                f"{cfg.output} already holds a run (last checkpoint {last}); pass --resume to "
                "continue it or choose another --output",
                field="output",
            )
        return None
    if cfg.resume != "last":
        path = Path(cfg.resume)
        if not (path / "trainer_state.json").is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND, f"{path}: not a Trainer checkpoint", field="resume"
            )
        if not checkpoints.is_complete(path):
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"{path}: incomplete checkpoint (no {checkpoints.COMPLETE} marker: the run stopped "
                "while saving it); resume from an earlier one or with --resume alone",
                field="resume",
            )
        return str(path)
    if last is None:
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"nothing to resume: no checkpoint under {trainer_dir}",
            field="resume",
        )
    return last


def _check_resume(cfg: TrainConfig, saved: dict[str, Any]) -> None:
    now = cfg.to_dict()
    # a setting added since the run was saved had its default then
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for key in RESUME_KEYS:
        then = saved["config"].get(key, defaults.get(key))
        if then != now.get(key):
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"--resume with a different {key}: the run used {then!r}, now {now.get(key)!r}",
                field=key,
            )


def _step_floor(cfg, model, sampler, lengths, summary, bf16: bool) -> dict[str, float]:
    """The timed steps' arithmetic floor (the first batches of epoch 0: what a fresh run
    trained; bitext batches only)."""
    import itertools

    from stilts.training.flops import bitext_padded_blocks, floor_report

    name = next(iter(lengths))
    start = sampler.offsets[sampler.names.index(name)]
    batches = [
        [i - start for i in b]
        for b in itertools.islice(iter(sampler), summary["steps"])
        if start <= b[0] < start + len(lengths[name])
    ]
    blocks = bitext_padded_blocks(batches, lengths[name], cfg.bitext_passes)
    return floor_report(
        model.encoder.config,
        blocks,
        summary["seconds_per_step_mean"],
        bf16,
        layers=model.layer,
        full=not cfg.adapter,
    )


def _default_name(base: str, tasks: list[str]) -> str:
    from stilts.training.tasks import NINE_TASKS

    suffix = "multitask" if set(tasks) == set(NINE_TASKS) else "+".join(tasks)
    return f"{base}-stilts-{suffix}"


def _build_callbacks(progress: bool, tracker):
    """Step timer, a logger for the training loss with steps/s, ETA and the last dev metric
    (stderr; stdout is left to the CLI's JSON), and progress bars without the Trainer's printed
    dicts that show the same in their postfix."""
    from transformers import ProgressCallback, TrainerCallback

    from stilts.training.progress import describe

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step (data, forward, backward, optimizer)."""

        def __init__(self):
            self.times: list[float] = []
            self.cpu: list[float] = []
            self._t0: tuple[float, float] | None = None

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = (time.perf_counter(), time.process_time())

        def on_step_end(self, args, state, control, **kwargs):
            if self._t0 is not None:
                self.times.append(time.perf_counter() - self._t0[0])
                self.cpu.append(time.process_time() - self._t0[1])

    class LogToLogger(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            tracker.start(state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if (
                state.is_world_process_zero
                and logs
                and not any(k.startswith("eval_") for k in logs)
            ):
                fields = tracker.fields(state.global_step, state.max_steps)
                LOG.info(
                    "step %d/%d: %s; %s",
                    state.global_step,
                    state.max_steps,
                    describe(fields),
                    json.dumps(logs),
                )

    class Bars(ProgressCallback):
        def on_step_end(self, args, state, control, **kwargs):
            super().on_step_end(args, state, control, **kwargs)
            if self.training_bar is not None:
                fields = tracker.fields(state.global_step, state.max_steps)
                self.training_bar.set_postfix_str(describe(fields), refresh=False)

        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return StepTimer(), [LogToLogger()] + ([Bars()] if progress else [])


def _build_trainer_class():
    import torch
    from transformers import Trainer

    from stilts.training.evaluation import evaluate_task
    from stilts.training.progress import headline

    class StiltsTrainer(Trainer):
        """``Trainer`` with the multi-task batch sampler and per-task dev evaluation."""

        def __init__(
            self, *args, task_data, batch_sampler, pad_id, metrics_path, progress, tracker, **kw
        ):
            super().__init__(*args, **kw)
            self.tracker = tracker
            self.task_data = task_data
            self.batch_sampler = batch_sampler
            self.pad_id = pad_id
            self.metrics_path = Path(metrics_path)
            self.progress = progress
            self.last_eval: dict[str, Any] | None = None
            self._train_losses: dict[str, tuple[Any, int]] = {}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            task = inputs.get("task")
            out = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
            if model.training and task is not None:
                # kept as tensors (no device sync per step); read at the next evaluation
                loss = (out[0] if return_outputs else out).detach().float()
                total, n = self._train_losses.get(task, (0.0, 0))
                self._train_losses[task] = (total + loss, n + 1)
            return out

        def _take_train_losses(self) -> tuple[dict[str, float], dict[str, int]]:
            losses = {t: float(total) / n for t, (total, n) in self._train_losses.items()}
            counts = {t: n for t, (_, n) in self._train_losses.items()}
            self._train_losses = {}
            return losses, counts

        def get_train_dataloader(self):
            loader = torch.utils.data.DataLoader(
                self.train_dataset,
                batch_sampler=self.batch_sampler,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
            )
            return self.accelerator.prepare(loader)

        def _save_checkpoint(self, model, trial):
            """The Trainer's save, then the completeness marker, then the rotation: a kill at
            any point leaves the last complete checkpoint in place, and incomplete ones are
            never resumed from."""
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            limit = self.args.save_total_limit
            self.args.save_total_limit = None  # rotation waits for the marker
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            if self.args.should_save:
                run_dir = Path(self._get_output_dir(trial=trial))
                current = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                checkpoints.mark_complete(current)
                checkpoints.rotate(run_dir, limit, current)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            model = self.accelerator.unwrap_model(self.model)
            t0 = time.perf_counter()
            results = {
                td.name: evaluate_task(
                    model,
                    td,
                    self.args.eval_batch_size,
                    self.args.device,
                    self.pad_id,
                    progress=self.progress,
                )
                for td in self.task_data
                if td.dev_features
            }
            train_loss, train_batches = self._take_train_losses()
            record = {
                "step": self.state.global_step,
                "epoch": self.state.epoch,
                "train_loss": train_loss,
                "train_batches": train_batches,
                "eval_seconds": round(time.perf_counter() - t0, 3),
                "tasks": results,
            }
            self.last_eval = record
            self.tracker.dev = headline(results)
            # Every process evaluates (no collectives needed); the first one logs.
            if self.is_world_process_zero():
                with self.metrics_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                LOG.info(
                    "eval at step %d: %s",
                    record["step"],
                    "; ".join(
                        f"{t} " + " ".join(f"{k}={v:.4g}" for k, v in r.items() if k != "n")
                        for t, r in results.items()
                    ),
                )
            flat = {
                f"{metric_key_prefix}_{task}_{k}": v
                for task, res in results.items()
                for k, v in res.items()
            }
            self.log(flat)
            self.control = self.callback_handler.on_evaluate(
                self.args, self.state, self.control, flat
            )
            return flat

    return StiltsTrainer


def _max_positions(config, default: int) -> int:
    max_pos = getattr(config, "max_position_embeddings", default)
    if getattr(config, "model_type", "") in ("xlm-roberta", "roberta", "camembert"):
        max_pos -= config.pad_token_id + 1  # RoBERTa positions start after the padding index
    return max_pos


def _check_max_len(cfg: TrainConfig, config) -> None:
    if cfg.max_seq_len == AUTO:
        return
    max_pos = _max_positions(config, cfg.max_seq_len)
    if cfg.max_seq_len > max_pos:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"max_seq_len {cfg.max_seq_len} exceeds the model's {max_pos} positions",
            field="max_seq_len",
        )


def _training_arguments(
    cfg: TrainConfig, max_steps: int, has_dev: bool, n_tasks: int, bf16: bool = False
):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(cfg.output / TRAINER_DIR),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_steps=max_steps,
        lr_scheduler_type="linear",
        warmup_steps=int(round(cfg.warmup * max_steps)),
        logging_steps=cfg.log_every,
        eval_strategy="steps" if has_dev else "no",
        eval_steps=(cfg.eval_every or max_steps) if has_dev else None,
        save_strategy="steps",
        save_steps=cfg.save_every,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        bf16=bf16,
        fp16=cfg.fp16,
        dataloader_num_workers=cfg.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        # without a GPU, torchrun processes need accelerate's CPU (gloo) mode to form one DDP job
        use_cpu=not torch.cuda.is_available() and not torch.backends.mps.is_available(),
        remove_unused_columns=False,
        # one head per task: a step leaves the other heads without gradients
        ddp_find_unused_parameters=n_tasks > 1,
        disable_tqdm=not cfg.progress,
        report_to="none",
    )


def _prepare_metrics_log(path: Path, resume_from: str | None) -> None:
    """A fresh run starts an empty log; a resumed one drops evaluations made after its
    checkpoint (they are made again)."""
    if resume_from is None:
        path.unlink(missing_ok=True)
        return
    if not path.is_file():
        return
    state = json.loads((Path(resume_from) / "trainer_state.json").read_text())
    keep = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and json.loads(line)["step"] <= state["global_step"]
    ]
    path.write_text("".join(x + "\n" for x in keep), encoding="utf-8")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _training_record(cfg: TrainConfig, base_name: str, run: dict, trainer) -> dict[str, Any]:
    record = {
        "method": "STILTs intermediate-task training (Phang et al. 2020)",
        "base_model": base_name,
        "tasks": cfg.tasks,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "batches_per_epoch": run["batches_per_epoch"],
        "task_sizes": run["task_sizes"],
        "task_probabilities": run["task_probabilities"],
        "sampling": cfg.sampling,
        "sampling_cap": cfg.sampling_cap,
        "language_sampling": cfg.language_sampling,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "world_size": trainer.args.world_size,
        "max_seq_len": run["recipe"]["max_seq_len"],
        "warmup": cfg.warmup,
        "max_grad_norm": cfg.max_grad_norm,
        "weight_decay": cfg.weight_decay,
        "seed": cfg.seed,
        "freeze_embeddings": run["recipe"]["freeze_embeddings"],
        "recipe": run["recipe"],
        "max_train_examples": cfg.max_train_examples,
        "data_files": run["data_files"],
        "dev_metrics": trainer.last_eval["tasks"] if trainer.last_eval else None,
    }
    if "bitext" in cfg.tasks:
        record["bitext"] = {"scale": cfg.bitext_scale, "margin": cfg.bitext_margin}
        if cfg.bitext_queue:
            record["bitext"]["queue"] = cfg.bitext_queue
    if cfg.adapter:
        record["adapter"] = _adapter_settings(cfg)
    return record


def _adapter_settings(cfg: TrainConfig) -> dict[str, Any]:
    return {
        "method": cfg.adapter,
        "rank": cfg.lora_rank,
        "alpha": cfg.lora_alpha,
        "dropout": cfg.lora_dropout,
        "targets": list(cfg.lora_targets),
        **({"init": cfg.init_adapter} if cfg.init_adapter else {}),
    }


def _add_adapter(cfg: TrainConfig, encoder):
    """Wrap the encoder in a peft LoRA model (only the adapter's weights train)."""
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.lora_targets)
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        # one target with regex characters is a pattern on the full module name (peft's rule)
        target_modules=targets[0] if len(targets) == 1 and _REGEX.search(targets[0]) else targets,
        bias="none",
    )
    try:
        if cfg.init_adapter:
            wrapped = _load_adapter(cfg, encoder, config)
        else:
            wrapped = get_peft_model(encoder, config)
    except ValueError as e:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"--lora-targets {','.join(cfg.lora_targets)}: {e}",
            field="lora_targets",
        ) from e
    trainable, total = wrapped.get_nb_trainable_parameters()
    LOG.info("LoRA adapter: %d trainable of %d parameters", trainable, total)
    return wrapped


def _init_adapter_dir(cfg: TrainConfig) -> Path:
    from stilts.graphs.adapters import check_adapter_dir
    from stilts.sources.tuned_model import shipped_adapter

    if cfg.init_adapter == "default":
        return shipped_adapter()
    return check_adapter_dir(cfg.init_adapter)


def _load_adapter(cfg: TrainConfig, encoder, config):
    """The saved adapter ``cfg.init_adapter``, trainable, after checking that it has this run's
    rank, alpha and targets."""
    from peft import PeftModel

    from stilts.graphs.adapters import PEFT_CONFIG

    path = _init_adapter_dir(cfg)
    saved = json.loads((path / PEFT_CONFIG).read_text(encoding="utf-8"))
    targets = saved.get("target_modules")
    targets = sorted(targets) if isinstance(targets, list) else targets
    wanted = config.target_modules
    wanted = sorted(wanted) if isinstance(wanted, list | set) else wanted
    for field, have, want in (
        ("lora_rank", saved.get("r"), config.r),
        ("lora_alpha", saved.get("lora_alpha"), config.lora_alpha),
        ("lora_targets", targets, wanted),
    ):
        if have != want:
            raise StiltsError(
                ErrorCode.INVALID_ARGUMENT,
                f"--init-adapter {path}: its {field} is {have!r}, this run's {want!r}",
                field=field,
            )
    LOG.info("LoRA adapter starts from %s", path)
    return PeftModel.from_pretrained(encoder, str(path), is_trainable=True)


def _finish(
    cfg: TrainConfig, model, model_path: str, tok_json: Path, run: dict, trainer, base
) -> dict:
    """Save the encoder (or the adapter, then the base with it merged in) with the manifest it
    will be exported with, then export it."""
    from stilts.fsutil import atomic_directory
    from stilts.graphs.adapters import merge_adapter, write_record
    from stilts.graphs.export import export_checkpoint
    from stilts.training.finalize import save_checkpoint

    base_name = base.name
    base.name = cfg.name or _default_name(base_name, cfg.tasks)
    base.source = {**base.source, "base_model": cfg.model if cfg.model != "default" else base_name}
    base.training = _training_record(cfg, base_name, run, trainer)
    out: dict[str, Any] = {}
    if cfg.adapter:
        with atomic_directory(cfg.output / ADAPTER_DIR) as work:
            model.encoder.save_pretrained(str(work))
            write_record(
                work,
                {
                    "name": base.name,
                    "adapter": _adapter_settings(cfg),
                    "manifest": base.to_dict(),
                },
            )
        out["adapter"] = str(cfg.output / ADAPTER_DIR)
        ckpt = merge_adapter(model_path, cfg.output / ADAPTER_DIR, cfg.output / CHECKPOINT_DIR)
    else:
        ckpt = save_checkpoint(model, tok_json, cfg.output / CHECKPOINT_DIR, base)
    out["checkpoint"] = str(ckpt)
    if cfg.export:
        # a tuned model's q4/int8 graph that misses its gate is left out, not fatal
        # with an adapter, from base + adapter (as `stilts models install` rebuilds it): the q4
        # graph then keeps the base's grid and the adapter's delta aside
        source, adapter = (model_path, cfg.output / ADAPTER_DIR) if cfg.adapter else (ckpt, None)
        manifest = export_checkpoint(
            source, cfg.output / MODEL_DIR, adapter=adapter, optional_quantized=True
        )
        out.update(model=str(cfg.output / MODEL_DIR), name=manifest.name, parity=manifest.parity)
    return out


def train(cfg: TrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run STILTs training end to end; returns a summary (paths, steps, metrics, timing).

    Args:
        cfg: the run's settings.
        callbacks: extra ``transformers.TrainerCallback`` objects.

    Raises:
        StiltsError: bad settings, missing / malformed data, a run already in ``output`` without
            ``resume``, a resume with different settings, or a failed export parity check.
    """
    cfg.validate()
    from stilts.training.sampling import parse_sampling
    from stilts.training.tasks import parse_tasks

    specs = parse_tasks(cfg.tasks)
    cfg.tasks = [s.name for s in specs]
    cfg.output = Path(cfg.output)
    parse_sampling(cfg.sampling)
    parse_sampling(cfg.language_sampling)
    resume_from = _resume_point(cfg)
    run_file = cfg.output / RUN_FILE
    saved = None
    if resume_from is not None:
        if not run_file.is_file():
            raise StiltsError(
                ErrorCode.NOT_FOUND,
                f"{run_file}: missing; cannot check the run's settings",
                field="resume",
            )
        saved = json.loads(run_file.read_text())
        _check_resume(cfg, saved)

    import torch

    threads_before = torch.get_num_threads()
    try:
        return _train(cfg, callbacks, resume_from, saved)
    finally:
        torch.set_num_threads(threads_before)


def _auto_len(cfg: TrainConfig, specs, config) -> int:
    """The length features are cut to while loading: the given one, or for ``auto`` the cap of
    the data-driven choice (bitext-only runs) or the paper's 256, within the model's positions."""
    from stilts.training.cpu import AUTO_LEN_CAP, AUTO_LEN_DEFAULT
    from stilts.training.tasks import BITEXT

    if cfg.max_seq_len != AUTO:
        return int(cfg.max_seq_len)
    only_bitext = all(s.kind == BITEXT for s in specs)
    return min(AUTO_LEN_CAP if only_bitext else AUTO_LEN_DEFAULT, _max_positions(config, 512))


def _cut_to_data(task_data: list, cap: int) -> tuple[list, int]:
    """``--max-seq-len auto`` on bitext-only runs: the length from the training data, every
    feature (train and dev) cut to it."""
    import numpy as np

    from stilts.training.cpu import auto_max_len, bitext_lengths, cut_bitext

    lengths = np.concatenate([bitext_lengths(td.train_features) for td in task_data])
    max_len = auto_max_len(lengths.tolist(), cap=cap)
    LOG.info(
        "--max-seq-len auto: %d tokens (99th percentile of %d pairs' longer side; cap %d); "
        "%d pairs cut",
        max_len,
        len(lengths),
        cap,
        int((lengths > max_len).sum()),
    )
    out = [
        dataclasses.replace(
            td,
            train_features=cut_bitext(td.train_features, max_len),
            dev_features=cut_bitext(td.dev_features, max_len),
        )
        for td in task_data
    ]
    return out, max_len


def _finished(resume_from: str | None, max_steps: int) -> bool:
    """Whether the checkpoint resumed from is the run's last step (its save or export was cut)."""
    if resume_from is None:
        return False
    state = json.loads((Path(resume_from) / "trainer_state.json").read_text())
    return state["global_step"] >= max_steps


def _load_finished(trainer, checkpoint: str, metrics_path: Path) -> float | None:
    """A finished run resumed: its weights and state, no further step (``Trainer.train`` would
    take one more); returns the run's training loss where the state recorded it."""
    from transformers import TrainerState

    LOG.info("%s: the run's last step; saving and exporting only", checkpoint)
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    if metrics_path.is_file():
        lines = [x for x in metrics_path.read_text(encoding="utf-8").splitlines() if x.strip()]
        trainer.last_eval = json.loads(lines[-1]) if lines else None
    losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
    return losses[-1] if losses else None


def _train(cfg: TrainConfig, callbacks, resume_from: str | None, saved) -> dict[str, Any]:
    import torch
    from transformers import PrinterCallback, ProgressCallback, set_seed

    from stilts.graphs.checkpoint import drop_layers_above
    from stilts.training.batches import MultiTaskCollator
    from stilts.training.cpu import (
        available_cores,
        bitext_lengths,
        resolve_bf16,
        resolve_freeze,
    )
    from stilts.training.data import describe_files, load_task
    from stilts.training.distill import load_teacher
    from stilts.training.finalize import base_manifest
    from stilts.training.model import MultiTaskModel, load_encoder, resolve_model
    from stilts.training.progress import Tracker
    from stilts.training.sampling import (
        MultiTaskBatchSampler,
        MultiTaskDataset,
        epoch_batches,
        task_probabilities,
    )
    from stilts.training.tasks import BITEXT, parse_tasks
    from stilts.training.text import TextTokenizer, tokenizer_file

    specs = parse_tasks(cfg.tasks)
    threads = cfg.threads or available_cores()
    torch.set_num_threads(threads)
    use_bf16 = resolve_bf16(cfg.bf16, cfg.fp16)
    freeze = resolve_freeze(cfg.freeze_embeddings)
    t_start = time.perf_counter()
    model_path = resolve_model(cfg.model)
    tok_json = tokenizer_file(model_path)
    tok = TextTokenizer(tok_json)
    encoder = load_encoder(model_path)
    base = base_manifest(model_path, encoder.config.num_hidden_layers, encoder.config.hidden_size)
    if cfg.layer is not None:
        base.layer = cfg.layer
    saved_labels = saved["labels"] if saved else {}
    _check_max_len(cfg, encoder.config)
    load_len = _auto_len(cfg, specs, encoder.config)
    task_data = [
        load_task(
            spec,
            tok,
            cfg.data_dir,
            load_len,
            cfg.train_files,
            cfg.dev_files,
            cfg.max_train_examples,
            cfg.max_eval_examples,
            cfg.doc_stride,
            labels=saved_labels.get(spec.name),
            prefix=base.prefixes.get("bitext", ""),
        )
        for spec in specs
    ]
    max_len = load_len
    if cfg.max_seq_len == AUTO and all(s.kind == BITEXT for s in specs):
        task_data, max_len = _cut_to_data(task_data, load_len)
    recipe = {
        "threads": threads,
        "bf16": use_bf16,
        "freeze_embeddings": freeze,
        "max_seq_len": max_len,
        "group_by_length": cfg.group_by_length,
        "bitext_passes": cfg.bitext_passes,
    }
    LOG.info("CPU recipe: %s", json.dumps(recipe))

    set_seed(cfg.seed)
    bitext_only = all(s.kind == BITEXT for s in specs)
    if bitext_only and drop_layers_above(encoder, base.layer):
        # only the pooled layer is read: an encoder pooled at L trains (and exports) as L layers
        LOG.info("training the encoder's first %d layers (pooled at %d)", base.layer, base.layer)
    if cfg.distill and not bitext_only:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, "--distill is for bitext-only runs", field="distill"
        )
    teacher = load_teacher(cfg.distill, encoder.config.vocab_size) if cfg.distill else None
    if cfg.gradient_checkpointing:
        encoder.gradient_checkpointing_enable()
    if cfg.adapter:
        encoder = _add_adapter(cfg, encoder)
    model = MultiTaskModel(
        encoder,
        {td.name: (td.spec.kind, td.num_labels) for td in task_data},
        freeze_embeddings=freeze,
        layer=base.layer,
        pooling=base.pooling,
        bitext_scale=cfg.bitext_scale,
        bitext_margin=cfg.bitext_margin,
        bitext_queue=cfg.bitext_queue,
        bitext_passes=cfg.bitext_passes,
        teacher=teacher,
        distill_weight=cfg.distill_weight,
    )

    dataset = MultiTaskDataset({td.name: td.train_features for td in task_data})
    sizes = dataset.sizes
    probs = task_probabilities(sizes, cfg.sampling, cfg.sampling_cap)
    per_epoch = epoch_batches(sizes, cfg.batch_size, cfg.sampling_cap)
    max_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch / cfg.grad_accum))
    keys = {
        td.name: [(f.source_key, f.target_key) for f in td.train_features]
        for td in task_data
        if td.spec.kind == BITEXT
    }
    lengths = {
        td.name: bitext_lengths(td.train_features) for td in task_data if td.spec.kind == BITEXT
    }
    languages = {
        td.name: [f.lang for f in td.train_features] for td in task_data if td.spec.kind == BITEXT
    }
    sampler = MultiTaskBatchSampler(
        sizes,
        cfg.batch_size,
        probs,
        per_epoch,
        cfg.seed,
        keys,
        lengths,
        cfg.group_by_length,
        languages,
        cfg.language_sampling,
    )
    language_shares = {
        name: {lang: round(n / sizes[name], 6) for lang, n in sorted(d[1].items())}
        for name, d in sampler.language_draws.items()
    }
    has_dev = any(td.dev_features for td in task_data)
    run = {
        "config": cfg.to_dict(),
        "model_path": model_path,
        "labels": {td.name: td.labels for td in task_data},
        "task_sizes": sizes,
        "task_probabilities": probs,
        "language_shares": language_shares,
        "batches_per_epoch": per_epoch,
        "max_steps": max_steps,
        "recipe": recipe,
        "data_files": {
            td.name: {"train": describe_files(td.train_files), "dev": describe_files(td.dev_files)}
            for td in task_data
        },
    }
    LOG.info(
        "training %s on %s: %d steps, %d batches per epoch, p=%s",
        model_path,
        ",".join(cfg.tasks),
        max_steps,
        per_epoch,
        {k: round(v, 4) for k, v in probs.items()},
    )
    args = _training_arguments(cfg, max_steps, has_dev, len(task_data), use_bf16)
    if args.should_save:
        cfg.output.mkdir(parents=True, exist_ok=True)
        checkpoints.remove_incomplete(cfg.output / TRAINER_DIR, keep=resume_from)
        _prepare_metrics_log(cfg.output / METRICS_FILE, resume_from)
        _write_json(cfg.output / RUN_FILE, run)

    tracker = Tracker()
    timer, extra_callbacks = _build_callbacks(cfg.progress, tracker)
    if cfg.save_every_minutes:
        extra_callbacks.append(checkpoints.save_timer_callback(cfg.save_every_minutes))
    trainer = _build_trainer_class()(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset={td.name: td.dev_features for td in task_data} if has_dev else None,
        data_collator=MultiTaskCollator({td.name: td.spec.kind for td in task_data}, tok.pad_id),
        callbacks=[timer, *(callbacks or [])],
        task_data=task_data,
        batch_sampler=sampler,
        pad_id=tok.pad_id,
        metrics_path=cfg.output / METRICS_FILE,
        progress=cfg.progress,
        tracker=tracker,
    )
    # The summary goes to stdout as JSON: logs go to stderr, bars without printed dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for cb in extra_callbacks:
        trainer.add_callback(cb)
    if _finished(resume_from, max_steps):
        train_loss = _load_finished(trainer, resume_from, cfg.output / METRICS_FILE)
    else:
        train_loss = trainer.train(resume_from_checkpoint=resume_from).training_loss
    summary: dict[str, Any] = {
        "output": str(cfg.output),
        "steps": trainer.state.global_step,
        "max_steps": max_steps,
        "train_loss": train_loss,
        "seconds_per_step_median": statistics.median(timer.times) if timer.times else None,
        # with length groups, step times spread widely: the mean is what sizes a run
        "seconds_per_step_mean": statistics.fmean(timer.times) if timer.times else None,
        "cpu_seconds_per_step_median": statistics.median(timer.cpu) if timer.cpu else None,
        "steps_timed": len(timer.times),
        "last_eval": trainer.last_eval,
        "task_probabilities": probs,
        "recipe": recipe,
    }
    if cfg.measure_floor and summary["seconds_per_step_median"] and lengths:
        summary["step_floor"] = _step_floor(cfg, model, sampler, lengths, summary, use_bf16)
    if trainer.is_world_process_zero():
        summary.update(_finish(cfg, model, model_path, tok_json, run, trainer, base))
    summary["seconds_total"] = round(time.perf_counter() - t_start, 2)
    return summary
