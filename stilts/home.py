"""The home: where models live and how a name becomes a model directory.

``$STILTS_HOME`` (default ``~/.cache/stilts``) holds installed models under ``models/<name>``
(and the CPU route records, :mod:`stilts.encoding.autoroute`). A model argument is either an
installed name (``default``) or a path to a model directory. What can be installed, and by which
source, is :mod:`stilts.catalog`'s (at the top; this module is at the bottom, beside the manifest).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.manifest import EXPORT_REVISION, MANIFEST_NAME, Manifest

LOG = logging.getLogger(__name__)

DEFAULT_MODEL = "default"


def stilts_home() -> Path:
    return Path(os.environ.get("STILTS_HOME", Path.home() / ".cache" / "stilts")).expanduser()


def models_dir() -> Path:
    return stilts_home() / "models"


def installed() -> list[str]:
    """Names of the models installed under ``$STILTS_HOME/models``."""
    d = models_dir()
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / MANIFEST_NAME).is_file())


def intact(target: Path, name: str) -> bool:
    """Whether a model is installed at ``target`` with every file matching its manifest, built by
    the current export revision (an install skips it then; a damaged, partial or older one is
    logged and reinstalled)."""
    if not (target / MANIFEST_NAME).is_file():
        return False
    try:
        manifest = Manifest.load(target)
        manifest.verify_files(target)
    except StiltsError as e:
        LOG.warning("reinstalling %s: %s", name, e)
        return False
    revision = manifest.parity.get("export_revision", 1)
    if revision < EXPORT_REVISION:
        LOG.warning(
            "reinstalling %s: built by export revision %d < %d", name, revision, EXPORT_REVISION
        )
        return False
    LOG.info("%s already installed at %s", name, target)
    return True


def keep_aside(target: Path, wanted: str) -> None:
    """Make room at ``target`` (``models/default``) for the model named ``wanted``.

    When ``target`` holds another model (the base before the default was tuned, or the tuned
    model after a release that serves the base), that model moves to ``models/<its name>``, so
    indices it built still find their encoder there (by name, or by the fingerprint they record).
    When that name is already installed with the same fingerprint, the copy at ``target`` is
    removed; with another, the model moves to ``models/<its name>-<fingerprint>``. A damaged
    manifest is left for the install to replace in place.
    """
    if not (target / MANIFEST_NAME).is_file():
        return
    try:
        built = Manifest.load(target)
    except StiltsError:
        return
    if built.name == wanted:
        return
    aside = models_dir() / built.name
    if (aside / MANIFEST_NAME).is_file():
        try:
            same = Manifest.load(aside).fingerprint == built.fingerprint
        except StiltsError:
            same = False
        if same:
            LOG.info(
                "%s held %s, also installed at %s: removing the copy", target, built.name, aside
            )
            shutil.rmtree(target)
            return
        aside = models_dir() / f"{built.name}-{built.fingerprint}"
    shutil.rmtree(aside, ignore_errors=True)
    target.rename(aside)
    LOG.warning(
        "%s held the model %s; it moved to %s (use --model %s for indices it built)",
        target,
        built.name,
        aside,
        aside.name,
    )


def resolve(path_or_name: str | os.PathLike) -> Path:
    """Turn a model name or directory into the directory that holds its contract files.

    Raises:
        StiltsError: NOT_FOUND with the command that installs it, when neither exists.
    """
    p = Path(path_or_name).expanduser()
    if (p / MANIFEST_NAME).is_file():
        return p
    named = models_dir() / str(path_or_name)
    if (named / MANIFEST_NAME).is_file():
        return named
    if str(path_or_name) == DEFAULT_MODEL:
        raise StiltsError(
            ErrorCode.NOT_FOUND,
            f"the default model is not installed under {models_dir()}; "
            "run `stilts models install default` (or `make run`)",
            field="model",
        )
    raise StiltsError(
        ErrorCode.NOT_FOUND,
        f"model {str(path_or_name)!r} is neither an installed model ({', '.join(installed()) or 'none'}) "
        "nor a directory with a stilts.json",
        field="model",
    )


def holders(fingerprint: str) -> list[str]:
    """Installed models whose vectors live in the space ``fingerprint`` (their manifests')."""
    out = []
    for name in installed():
        try:
            if Manifest.load(models_dir() / name).fingerprint == fingerprint:
                out.append(name)
        except StiltsError:
            continue
    return out


def info(path_or_name: str | os.PathLike) -> dict:
    """The manifest of a model plus where it lives and the sizes of its files."""
    d = resolve(path_or_name)
    m = Manifest.load(d)
    out = m.to_dict()
    out["path"] = str(d)
    out["sizes"] = {n: (d / n).stat().st_size for n in m.files if (d / n).exists()}
    return out
