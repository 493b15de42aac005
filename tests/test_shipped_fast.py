"""The shallow model shipped in the package (issue 28): ``stilts models install default-fast`` is
offline, rebuilds the L-layer model that was benchmarked (its recorded fp32 vectors) from the base
checkpoint and the shipped fp16 weights, and leaves ``default`` as it is."""

from __future__ import annotations

import onnx
import pytest
from conftest import install_offline

from stilts.catalog import installable
from stilts.manifest import Manifest, sha256_file
from stilts.sources import fast_model, tuned_model


@pytest.fixture(scope="module")
def shipped() -> dict:
    if not fast_model.shipped():
        pytest.skip("this version ships no default-fast model")
    return fast_model.read_record()


def test_shipped_record_names_a_shallow_model_and_its_evidence(shipped):
    manifest = shipped["manifest"]
    assert 1 <= manifest["layer"] < 12 and shipped["name"].endswith(f"-l{manifest['layer']}")
    assert shipped["evidence"], "the benchmark verdict it shipped on"
    assert len(shipped["parity_vectors"]) >= 8
    assert fast_model.NAME in installable()


@pytest.mark.slow
def test_install_is_offline_and_reproduces_the_recorded_vectors(shipped, tmp_path):
    model = install_offline(fast_model.NAME, tmp_path)
    assert tuned_model.check_parity_vectors(model, shipped["parity_vectors"]) < 1e-4
    m = Manifest.load(model)
    layer = shipped["manifest"]["layer"]
    assert m.name == shipped["name"] and m.layer == layer
    weights = fast_model.SHIPPED / fast_model.WEIGHTS
    assert m.source["weights"]["sha256"] == sha256_file(weights)
    graph = onnx.load(str(model / "model.onnx"), load_external_data=False)
    layers = {n.name.split("/")[3] for n in graph.graph.node if "/encoder/layer." in n.name}
    assert layers == {f"layer.{i}" for i in range(layer)}
    # the default is untouched: indices it built keep their encoder
    assert not (model.parent / "default").exists()
