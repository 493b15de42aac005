"""Shared fixtures: the dev pack beside the project, the installed default model.

The suite runs in a home of its own: ``$STILTS_HOME`` points at a temporary directory for the
whole session (this process and every child it starts), so route records, indexes, installs and
downloads of the tests land there. The one thing shared with the user's own home is the installed
default model: ``models/default`` links to it (and the temporary home starts with copies of its
route records, links to its base checkpoint and to the downloaded wheels, which the tests only
read). At the end of the session the user's home must be as it was, but for ``models/default``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEV_PACK = Path(os.environ.get("STILTS_DEV_PACK", ROOT.parent / "shared" / "data" / "bitext-dev"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The user's own $STILTS_HOME while the session runs in a temporary one (set by pytest_configure;
# a child pytest process, e.g. an xdist worker, inherits both and keeps them).
USER_HOME_ENV = "STILTS_TEST_USER_HOME"
# What the suite may write in the user's home: the one shared default model.
SHARED = (Path("models") / "default",)


def snapshot(home: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``home`` (links not followed) with its mtime and size, but for
    :data:`SHARED`'s subtrees: what the suite must leave as it found it."""
    if not home.is_dir():
        return {}
    out: dict[str, tuple[int, int]] = {}
    for top, dirs, files in os.walk(home):
        rel_top = Path(top).relative_to(home)
        dirs[:] = [d for d in dirs if rel_top / d not in SHARED]
        for name in [".", *dirs, *files]:
            path = Path(top) / name
            st = path.lstat()
            out[str(rel_top / name)] = (st.st_mtime_ns, st.st_size)
    return out


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """The paths created, removed or modified between two :func:`snapshot` s."""
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _test_home(user: Path) -> Path:
    """A temporary ``$STILTS_HOME`` that shares the user's default model (and what it is built
    from), with copies of the default model's route records."""
    home = Path(tempfile.mkdtemp(prefix="stilts-test-home-"))
    default = user / "models" / "default"
    if default.is_dir():
        (home / "models").mkdir()
        (home / "models" / "default").symlink_to(default, target_is_directory=True)
        try:  # its route records, named after the model (stilts.encoding.autoroute.record_path)
            name = json.loads((default / "stilts.json").read_text())["name"]
        except (OSError, ValueError, KeyError, TypeError):
            name = None
        if name and (user / "cpu-routes").is_dir():
            (home / "cpu-routes").mkdir()
            safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60]
            for record in (user / "cpu-routes").glob(f"{safe}-*.json"):
                shutil.copy2(record, home / "cpu-routes" / record.name)
    checkpoint = user / "checkpoints" / "default"  # the base checkpoint `make model` built
    if checkpoint.is_dir():
        (home / "checkpoints").mkdir()
        (home / "checkpoints" / "default").symlink_to(checkpoint, target_is_directory=True)
    if (user / "downloads").is_dir():  # the pinned wheels, one link each: new ones land here
        (home / "downloads").mkdir()
        for wheel in (user / "downloads").iterdir():
            if wheel.is_file():
                (home / "downloads" / wheel.name).symlink_to(wheel)
    return home


def pytest_configure(config) -> None:
    if os.environ.get(USER_HOME_ENV):
        return  # a child session: the parent's temporary home is already set
    from stilts.home import stilts_home

    user = stilts_home()
    home = _test_home(user)
    config.stash[_SESSION_HOME] = (user, home, snapshot(user))
    config.stash[_USER_ENV] = os.environ.get("STILTS_HOME")
    os.environ[USER_HOME_ENV] = str(user)
    os.environ["STILTS_HOME"] = str(home)


def pytest_unconfigure(config) -> None:
    session = config.stash.get(_SESSION_HOME, None)
    if session is None:
        return
    _, home, _ = session
    original = config.stash.get(_USER_ENV, None)
    if original is None:
        os.environ.pop("STILTS_HOME", None)
    else:
        os.environ["STILTS_HOME"] = original
    os.environ.pop(USER_HOME_ENV, None)
    shutil.rmtree(home, ignore_errors=True)  # removes the links, never what they point to


_SESSION_HOME = pytest.StashKey[tuple]()
_USER_ENV = pytest.StashKey["str | None"]()


def pytest_sessionfinish(session, exitstatus) -> None:
    """Fails the run when the suite wrote under the user's own $STILTS_HOME anywhere but the
    shared default model. Runs where the temporary home was made: the one process of a plain
    run, the controller of a parallel one (after its workers are done)."""
    stash = session.config.stash.get(_SESSION_HOME, None)
    if stash is None:
        return
    user, _, before = stash
    diff = changed(before, snapshot(user))
    if diff:
        message = (
            f"the suite wrote under the user's {user} outside models/default (or another "
            "process did while it ran): " + ", ".join(diff[:20])
        )
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ERROR: {message}", red=True, bold=True)
        else:
            print(f"ERROR: {message}", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(message + " (CI=true: it must be there)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def dev_pack() -> Path:
    """``../shared/data/bitext-dev``: skipped where absent, a failure in CI."""
    return _need(DEV_PACK, "the dev pack (../shared/data/bitext-dev)")


@pytest.fixture(scope="session")
def docs_pack() -> Path:
    """``../shared/data/docs-dev`` (documentation prose): skipped where absent, a failure in CI."""
    return _need(DEV_PACK.parent / "docs-dev", "the docs dev pack (../shared/data/docs-dev)")


def read_tatoeba(dev_pack: Path, lang: str, n: int | None = None) -> tuple[list[str], list[str]]:
    rows = [
        line.rstrip("\n").split("\t")
        for line in (dev_pack / "tatoeba" / f"{lang}-en.tsv").open(encoding="utf-8")
    ][:n]
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The installed default model (``make test`` installs it first)."""
    from stilts.home import models_dir

    return _need(
        models_dir() / "default", "the default model (run `stilts models install default`)"
    )


@pytest.fixture(scope="session")
def encoder(default_model_dir):
    from stilts import Encoder

    return Encoder(default_model_dir, precision="int8")


@pytest.fixture(scope="session")
def encoder_auto(default_model_dir):
    """The default model on its ``auto`` route (what `stilts mine` and `stilts serve` run):
    the fastest route that passes the parity gate on this CPU, from its copied route record."""
    from stilts import Encoder

    return Encoder(default_model_dir)


@pytest.fixture(scope="session")
def encoder_fp32(default_model_dir):
    from stilts import Encoder

    return Encoder(default_model_dir, precision="fp32")


def best_threshold(scored: list[tuple[float, tuple]], gold: set):
    """The F1-optimal threshold over ``(score, pair)`` candidates (stilts.benchmarks.metrics)."""
    from stilts.benchmarks.metrics import oracle_threshold

    return oracle_threshold([s for s, _ in scored], [p in gold for _, p in scored], len(gold))


def f1_of(predicted, gold: set) -> float:
    from stilts.benchmarks.metrics import prf

    return prf(predicted, gold)[2]


def install_offline(name: str, tmp_path: Path) -> Path:
    """``stilts models install NAME --no-route`` in a fresh ``STILTS_HOME`` (the base checkpoint
    linked in) with every network route dead: hub libraries offline, pip without an index, every
    proxy a refused local port. Returns the installed model directory."""
    from stilts.sources.default_model import checkpoint_dir

    base = _need(checkpoint_dir(), "the base checkpoint (`stilts models install default`)")
    home = tmp_path / "home"
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / "default").symlink_to(base)
    dead = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "STILTS_HOME": str(home),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PIP_NO_INDEX": "1",
        "http_proxy": dead,
        "https_proxy": dead,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
    }
    cmd = [sys.executable, "-m", "stilts.cli", "models", "install", name, "--no-route"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return home / "models" / name


def make_toy_xlmr(d: Path, texts, vocab_size: int = 400) -> Path:
    """A raw 'MLM' checkpoint in ``d``: a 2-layer, hidden-32 XLM-R with random weights and a
    sentencepiece-style Unigram tokenizer trained on ``texts`` (XLM-R's special tokens and
    template)."""
    from stilts.benchmarks.toy_xlmr import save_random_xlmr, unigram_tokenizer

    tok = unigram_tokenizer(texts, vocab_size)
    tok.save(str(d / "tokenizer.json"))
    shape = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64, "positions": 130}
    save_random_xlmr(d, vocab=tok.get_vocab_size(), **shape)
    return d


def set_ray_auth_mode(mode: str | None) -> None:
    """Set this process's Ray authentication mode (``RAY_AUTH_MODE``; None: unset).

    A local ``ray.init()`` switches the whole process to token authentication: it writes
    ``RAY_AUTH_MODE=token`` into ``os.environ``, reloads Ray's cached config and loads the token
    (``~/.ray/auth_token``); ``ray.shutdown()`` undoes none of it. A later driver in the same
    process then refuses the unauthenticated calls of a cluster started without tokens (the
    raylets asking the driver, the owner of the objects it put, where they are), and Ray reports
    that as ``OwnerDiedError``. The tests that start Ray put the mode back with this, or pin it
    to their cluster's.
    """
    from ray._raylet import AuthenticationTokenLoader, Config

    if mode is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # what Ray does itself after changing the mode: reload the cached config
    AuthenticationTokenLoader.instance().reset_cache()  # and forget the token it loaded


def clustered_pairs(n: int, dim: int, clusters: int = 50, seed: int = 0):
    """Two sides of ``n`` translation-like pairs: a shared point near one of ``clusters`` centres
    plus each side's own noise, L2-normalised float32 (IVF lists are then meaningful)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    noise = rng.standard_normal((n, dim)).astype(np.float32)
    base = centres[rng.integers(0, clusters, n)] + 0.5 * noise
    sides = []
    for _ in range(2):
        v = base + 0.25 * rng.standard_normal((n, dim)).astype(np.float32)
        sides.append((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32))
    return sides


def in_flight(url: str, method: str) -> float:
    """A server's ``stilts_requests_in_flight`` gauge for ``method``, from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "stilts_requests_in_flight" and s.labels["method"].endswith(method):
                return s.value
    return 0.0
