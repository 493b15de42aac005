"""`stilts bench speed` end to end at tiny sizes (real encoder, FAISS, server), and `bench encode`."""

from __future__ import annotations

import json

import pytest

from stilts.benchmarks import speed_search
from stilts.cli import main
from stilts.encoding.encoder import available_routes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_synthetic_vectors_are_unit_and_clustered():
    v = speed_search.synthetic(2000, 64, centres=20, seed=1)
    assert v.shape == (2000, 64)
    assert abs(float((v * v).sum(1).mean()) - 1) < 1e-5
    # clustered: a vector's nearest neighbour is far closer than a random pair
    sims = v[:100] @ v.T
    sims[range(100), range(100)] = -1
    assert sims.max(1).mean() > 0.5 > abs(float((v[:100] @ v[100:200].T).mean()))


@pytest.mark.slow
def test_speed_all_sections_tiny(dev_pack, default_model_dir, tmp_path):
    out = tmp_path / "speed.json"
    rc = main(
        [
            "bench",
            "speed",
            "--sections",
            "encode,search,mining,grpc,http",  # process: whole processes, test_process_timing below
            "--model",
            str(default_model_dir),
            "--tatoeba",
            str(dev_pack / "tatoeba"),
            "--bucc",
            str(dev_pack / "bucc"),
            "--no-baselines",
            "--repeats",
            "1",
            "--encode-n",
            "32",
            "--batch-sizes",
            "1,8",
            "--search-sizes",
            "2000",
            "--queries",
            "50",
            "--mining-max",
            "150",
            "--concurrency",
            "1,4",
            "--workloads",
            "embed",
            "--max-requests",
            "20",
            "--max-seconds",
            "20",
            "--http-concurrency",
            "2",
            "--http-seconds",
            "0.5",
            "--output",
            str(out),
            "--report",
            str(tmp_path / "speed.md"),
            "--quiet",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    s = res["sections"]
    enc = s["encode"]["by_batch_size"]
    stilts_systems = {f"stilts-{p}" for p in available_routes(default_model_dir)}
    assert set(enc) == {"1", "8"} and set(enc["8"]) == stilts_systems
    for row in enc.values():
        for r in row.values():
            assert (
                r["sentences_per_second"] > 0 and r["tokens_per_second"] > r["sentences_per_second"]
            )
        assert row["stilts-int8"]["vs"]["stilts-fp32"] > 0

    kinds = s["search"]["by_size"]["2000"]["kinds"]
    assert set(kinds) == {"flat", "ivf", "hnsw"}
    assert kinds["flat"]["recall_at_10"] == 1.0 and kinds["flat"]["p50_vs_flat"] == 1.0
    assert kinds["hnsw"]["recall_at_10"] > 0.8
    for k in kinds.values():
        lat = k["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and k["qps_batch"] > 0

    m = s["mining"]
    assert m["n_src"] == 150 and set(m["systems"]) == {"stilts mine", "encode+knn"}
    assert m["systems"]["stilts mine"]["f1_oracle"] > 0.5
    assert m["overhead_vs_encode_knn"] > 0.5  # mine does at least the floor's work

    g = s["grpc"]
    for conc in ("1", "4"):
        r = g["workloads"]["embed"][conc]
        assert r["ok"] == 20 and r["errors"] == {} and r["stopped_by"] == "count"
        assert r["throughput_vs_offline"] > 0 and r["server_metrics"]["derived"]["requests"] >= 20
    assert g["server"]["exit_code"] == 0  # its own server, stopped gracefully

    h = s["http"]
    assert h["same_vectors"] and h["server"]["exit_code"] == 0
    assert set(h["results"]) == {"batch1_c2", "batch32_c2"}
    for r in h["results"].values():
        assert r["errors"] == 0 and r["p50_ratio"] > 0 and r["throughput_ratio"] > 0

    md = (tmp_path / "speed.md").read_text()
    for title in ("## Encode", "## Search", "## Mining", "## gRPC under load", "## HTTP against"):
        assert title in md
    assert len(res["plots"]) == 5
    for p in res["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == PNG_MAGIC


def test_process_timing_sees_a_childs_time_and_peak_memory():
    """What the process section measures, on a child that holds 200 MB for a moment: its wall
    and CPU time and its peak RSS (which a parent-side sample taken after the exit would miss)."""
    import sys

    from stilts.benchmarks import speed_process

    code = "import time; b = bytearray(200 * 2**20); t = time.process_time()\nwhile time.process_time() - t < 0.2: pass"
    r = speed_process.timed([sys.executable, "-c", code])
    assert r["peak_rss_mb"] > 200 and r["cpu_seconds"] >= 0.2 and r["wall_seconds"] >= 0.2
    with pytest.raises(RuntimeError, match="exited 3"):
        speed_process.timed([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_speed_bad_flags(capsys):
    assert main(["bench", "speed", "--sections", "encode,bogus", "--output", "x.json"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert (
        main(
            [
                "bench",
                "speed",
                "--batch-sizes",
                "0",
                "--sections",
                "encode",
                "--no-baselines",
                "--output",
                "x.json",
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_scale_section_measures_every_step(dev_pack, default_model_dir, tmp_path):
    """The --million machinery at a tiny size: real-like vectors, per-kind child processes,
    mmap serving, mining from .npy files scored against the truth, and the scale-out plan."""
    from stilts.benchmarks import speed_report, speed_scale

    r = speed_scale.run(
        3000,
        tmp_path / "scale",
        dev_pack / "tatoeba",
        kinds=("flat", "ivf"),
        mine_kinds=("ivf",),
        n_queries=50,
        mine_n=2000,
        per_language=4,
    )
    v = r["vectors"]
    assert v["real_pairs"] > 300 and 0.5 < v["derived"]["pair_cosine_median"] < 0.99
    flat, ivf = r["search"]["flat"], r["search"]["ivf"]
    assert flat["memory"]["recall_at_10"] == 1.0 and flat["memory"]["storage"] == "memory"
    assert ivf["mmap"]["storage"] == "mmap" and ivf["memory"]["storage"] == "memory"
    assert ivf["mmap"]["recall_at_10"] == ivf["memory"]["recall_at_10"] > 0.5
    assert ivf["factory"].startswith("IVF") and ivf["training"]["train_seconds"] > 0
    assert flat["build_peak_rss"] > 0 and ivf["disk_bytes"] > 3000 * 384 * 4
    m = r["mining"]["ivf"]
    assert m["n"] == 2000 and m["wall_seconds"] > 0 and m["peak_rss"] > 0
    assert 0 < m["correct_pairs"] <= m["pairs"] <= 2000
    assert 0 <= m["mined_target_in_exact_top4"] <= 1
    assert {p["kind"] for p in r["plan"]} == {"flat", "ivf"}
    md = "\n".join(speed_report._scale(r))
    assert "ivf (mmap)" in md and "Scale-out estimate" in md
