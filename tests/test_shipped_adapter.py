"""The adapter shipped in the package (issue 17): its install is offline and rebuilds the model
that was benchmarked (the fp32 vectors its record carries), and ``default`` serves it when the
record says it won."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import install_offline

from stilts.graphs.adapters import PEFT_WEIGHTS, read_record
from stilts.home import intact, keep_aside, models_dir
from stilts.manifest import EXPORT_REVISION, Manifest, sha256_file
from stilts.sources import tuned_model


@pytest.fixture(scope="module")
def shipped() -> dict:
    if not (tuned_model.SHIPPED_ADAPTER / PEFT_WEIGHTS).is_file():
        pytest.skip("this version ships no default-bitext adapter")
    return read_record(tuned_model.SHIPPED_ADAPTER)


def test_shipped_record_says_what_won(shipped):
    evidence = shipped["evidence"]
    assert evidence["no_regression"], "a shipped adapter never regresses on either pack"
    # it serves as `default` only when the evidence says it won (it may wait, with a reason)
    assert shipped["serves_default"] == tuned_model.serves_default()
    assert evidence["serves_default"] or not shipped["serves_default"]
    assert (
        shipped["serves_default"]
        or evidence["serves_default"] is False
        or shipped.get("default_deferred")
    )
    assert len(shipped["parity_vectors"]) >= 8


@pytest.mark.slow
def test_install_is_offline_and_reproduces_the_recorded_vectors(shipped, tmp_path):
    """``stilts models install default-bitext`` with every network route dead (a proxy that
    refuses, hub libraries offline, pip without an index): it builds from the base checkpoint and
    the shipped adapter, and its fp32 vectors equal the recorded ones."""
    model = install_offline("default-bitext", tmp_path)
    assert tuned_model.check_parity_vectors(model, shipped["parity_vectors"]) < 1e-4
    m = Manifest.load(model)
    assert m.source["adapter"]["sha256"] == sha256_file(tuned_model.SHIPPED_ADAPTER / PEFT_WEIGHTS)
    assert m.parity["fp32_vs_torch_max_abs_diff"] < 1e-4


def test_default_is_the_winner(shipped, default_model_dir):
    """``make model`` installed ``default``: the tuned model when the record says it won (its
    vectors equal the recorded ones), else the base."""
    m = Manifest.load(default_model_dir)
    if shipped["serves_default"]:
        assert m.source["adapter"]["sha256"] == sha256_file(
            tuned_model.SHIPPED_ADAPTER / PEFT_WEIGHTS
        )
        diff = tuned_model.check_parity_vectors(default_model_dir, shipped["parity_vectors"])
        assert diff < 1e-4
    else:
        assert "adapter" not in m.source
    vectors = np.asarray(shipped["parity_vectors"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


@pytest.mark.slow
def test_base_installs_under_its_own_name_and_old_indices_name_it(default_model_dir):
    """``stilts models install multilingual-e5-small`` installs the untuned base beside
    ``default``; an index the base built refuses another encoder's vectors and names the model
    to use (the base, now installed)."""
    from stilts.errors import ErrorCode, StiltsError
    from stilts.index import VectorIndex
    from stilts.sources import default_model

    done = subprocess.run(
        [sys.executable, "-m", "stilts.cli", "models", "install", default_model.NAME, "--no-route"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    base_dir = models_dir() / default_model.NAME
    assert done.stdout.strip() == str(base_dir)
    base = Manifest.load(base_dir)
    assert base.name == default_model.NAME and "adapter" not in base.source
    index = VectorIndex.create(None, base.dim, kind="flat", manifest=base.to_dict())
    default = Manifest.load(default_model_dir)
    if default.fingerprint == base.fingerprint:  # this version's default is the base itself
        index.check_manifest(default)
        return
    with pytest.raises(StiltsError) as e:
        index.check_manifest(default)
    assert e.value.code == ErrorCode.FAILED_PRECONDITION
    assert f"use --model {default_model.NAME}" in str(e.value)


def _fake_model(path, name: str, revision: int = EXPORT_REVISION, weights: str = "") -> Manifest:
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes((weights or name).encode())
    m = Manifest(name=name, dim=4, max_len=8, parity={"export_revision": revision})
    m.files = {"model.onnx": sha256_file(path / "model.onnx")}
    m.save(path)
    return m


def test_an_install_moves_another_default_aside_and_rebuilds_an_older_export(tmp_path, monkeypatch):
    """``models/default`` holding another model than the one this release builds there (the base
    before the tuned default, or the reverse): it moves to ``models/<its name>``, where indices it
    built find it; a duplicate of an installed name is dropped; an older export is not intact."""
    monkeypatch.setenv("STILTS_HOME", str(tmp_path))
    default = models_dir() / "default"
    _fake_model(default, "the-base")
    keep_aside(default, "the-tuned")
    assert not default.exists() and Manifest.load(models_dir() / "the-base").name == "the-base"
    _fake_model(default, "the-tuned")
    keep_aside(default, "the-tuned")  # already the wanted model: stays
    assert intact(default, "default")
    keep_aside(default, "the-base")  # a release that serves the base again: the tuned moves aside
    assert Manifest.load(models_dir() / "the-tuned").name == "the-tuned"
    _fake_model(default, "the-tuned")
    keep_aside(default, "the-base")  # its name is taken by the same model: a copy, removed
    assert not default.exists() and intact(models_dir() / "the-tuned", "the-tuned")
    other = _fake_model(default, "the-tuned", weights="other weights")
    keep_aside(default, "the-base")  # the same name, another vector space: both kept
    assert intact(models_dir() / f"the-tuned-{other.fingerprint}", "the-tuned")
    assert intact(models_dir() / "the-tuned", "the-tuned") and not default.exists()
    _fake_model(default, "the-base", revision=EXPORT_REVISION - 1)
    assert not intact(default, "default")
