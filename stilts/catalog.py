"""The catalog: which model sources exist, what they install, and how to get a missing model.

It sits at the top of the model lifecycle: it imports the sources (:mod:`stilts.sources`), and
nothing below it imports it. The home (:mod:`stilts.home`) knows what is installed; this module
knows what can be installed.
"""

from __future__ import annotations

from pathlib import Path

from stilts.errors import ErrorCode, StiltsError
from stilts.home import DEFAULT_MODEL, holders
from stilts.sources import default_model, fast_model, published, tuned_model


def installable() -> list[str]:
    """The names ``stilts models install NAME`` builds offline."""
    fast = [fast_model.NAME] if fast_model.shipped() else []
    return [DEFAULT_MODEL, default_model.NAME, tuned_model.NAME, *fast, *published.PUBLISHED]


def model_hint(fingerprint: str | None, model: str | None) -> str:
    """How to get the encoder that built an index (its ``fingerprint`` and manifest name
    ``model``): the installed model to pass as --model, or the command that installs it."""
    found = holders(fingerprint) if fingerprint else []
    if found:
        return f"it is installed as {', '.join(found)}: use --model {found[0]}"
    if model and model in installable():
        return f"install it with `stilts models install {model}` and use --model {model}"
    return f"install or import the model {model!r} that built it and pass it as --model"


def install(
    name: str,
    force: bool = False,
    adapter: str | None = None,
    parity_texts: list[str] | None = None,
) -> Path:
    """Install the model ``name`` from the source that builds it (``default`` is the tuned model
    when the shipped adapter serves the default, else the published base).

    Raises:
        StiltsError: INVALID_ARGUMENT for a name no source builds, or an adapter given to a
            source other than the tuned model.
    """
    if name in published.PUBLISHED:
        return published.install(name, force=force, parity_texts=parity_texts)
    if name == fast_model.NAME and not adapter:
        return fast_model.install(force=force, parity_texts=parity_texts)
    tuned = name == tuned_model.NAME or (name == DEFAULT_MODEL and tuned_model.serves_default())
    if tuned:
        return tuned_model.install(
            force=force, adapter=adapter, name=name, parity_texts=parity_texts
        )
    if name not in (DEFAULT_MODEL, default_model.NAME):
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT,
            f"only {', '.join(installable())} can be installed by name; use "
            "`stilts models import DIR` for a sentence-transformers directory and `stilts export` "
            "for other checkpoints",
            "name",
        )
    if adapter:
        raise StiltsError(
            ErrorCode.INVALID_ARGUMENT, f"--adapter applies to {tuned_model.NAME} only", "adapter"
        )
    return default_model.install(force=force, parity_texts=parity_texts, name=name)
