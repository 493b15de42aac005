"""``stilts mine`` on precomputed .npy vector files (the encoder skipped), through the real CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stilts.cli import main
from stilts.errors import ErrorCode, StiltsError
from stilts.index import mining
from stilts.index.minevectors import load_vectors


def pair_vectors(n: int, dim: int = 48, noise: float = 0.25, seed: int = 0):
    """Two sides where row t of one translates row t of the other (plus shuffled distractors)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((60, dim)).astype(np.float32)
    base = centres[rng.integers(0, 60, n)] + 0.7 * rng.standard_normal((n, dim))
    x = base + noise * rng.standard_normal((n, dim))
    y = base + noise * rng.standard_normal((n, dim))
    unit = lambda a: (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return unit(x), unit(y)


def read_pairs(path) -> list[tuple[float, int, int]]:
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [(float(s), int(a), int(b)) for s, a, b in rows]


def test_cli_mines_npy_files_like_the_library(tmp_path, capsys):
    x, y = pair_vectors(3000)
    perm = np.random.default_rng(1).permutation(3000)
    np.save(tmp_path / "src.npy", x)
    np.save(tmp_path / "tgt.npy", y[perm])
    out = tmp_path / "pairs.tsv"
    assert main(["mine", str(tmp_path / "src.npy"), str(tmp_path / "tgt.npy"), "-o", str(out),
                 "--index", "flat", "--quiet"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_format"] == "npy" and summary["src"]["vectors"] == 3000
    got = read_pairs(out)
    want = mining.mine(x, y[perm], index="flat")
    assert [(a, b) for _, a, b in got] == [(p.src, p.tgt) for p in want]
    np.testing.assert_allclose([s for s, _, _ in got], [p.score for p in want], atol=1e-6)
    correct = np.mean([perm[b] == a for _, a, b in got])  # tgt row b holds y[perm[b]]
    assert correct > 0.95, correct
    assert json.loads((tmp_path / "pairs.tsv.json").read_text())["pairs"] == len(got)


@pytest.mark.slow
def test_ivfpq_mining_reranks_to_the_exact_pairs(tmp_path, capsys):
    x, y = pair_vectors(5000, dim=32, seed=2)
    np.save(tmp_path / "src.npy", x)
    np.save(tmp_path / "tgt.npy", y)
    out = tmp_path / "pq.tsv"
    args = ["mine", str(tmp_path / "src.npy"), str(tmp_path / "tgt.npy"), "-o", str(out)]
    assert main([*args, "--index", "ivfpq", "--input-format", "npy", "--quiet"]) == 0
    exact = {(p.src, p.tgt) for p in mining.mine(x, y, index="flat")}
    got = read_pairs(out)
    agree = np.mean([(a, b) in exact for _, a, b in got])
    assert agree > 0.95, agree
    # re-ranked: the scores are exact-cosine margins, not PQ approximations
    cos = [float(x[a] @ y[b]) for _, a, b in got[:20]]
    assert all(c > 0 for c in cos)


def test_bad_vector_files_are_refused_with_the_field(tmp_path, capsys):
    x, y = pair_vectors(50)
    np.save(tmp_path / "ok.npy", x)
    np.save(tmp_path / "f64.npy", x.astype(np.float64))
    np.save(tmp_path / "raw.npy", x * 3)
    nan = x.copy()
    nan[7, 3] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "dim.npy", pair_vectors(50, dim=16)[0])
    (tmp_path / "text.txt").write_text("hello\n")
    for name, message in [
        ("f64.npy", "need float32"),
        ("raw.npy", "row 0 has norm 3.0000"),
        ("nan.npy", "row 7 is not finite"),
    ]:
        with pytest.raises(StiltsError) as e:
            load_vectors(tmp_path / name, "src")
        assert e.value.code is ErrorCode.INVALID_ARGUMENT and e.value.field == "src"
        assert message in str(e.value)
    out = str(tmp_path / "o.tsv")
    ok = str(tmp_path / "ok.npy")
    assert main(["mine", ok, str(tmp_path / "text.txt"), "-o", out, "--quiet"]) == 2
    assert "both be .npy vector files" in capsys.readouterr().err
    assert main(["mine", ok, str(tmp_path / "dim.npy"), "-o", out, "--quiet"]) == 2
    assert "dimensions differ (48 vs 16)" in capsys.readouterr().err
