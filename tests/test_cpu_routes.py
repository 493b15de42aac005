"""CPU routes and ``--precision auto``: the parity gate on real dev sentences, the choice recorded
per model and CPU and reused, bf16 only on a CPU with native bf16 (recorded timings), a missing
runtime degrading to the next route, and OpenVINO leaving nothing under HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stilts.encoding import autoroute
from stilts.runtimes.routes import ROUTES

ROOT = Path(__file__).resolve().parent.parent
AVX2_FLAGS = ["avx", "avx2", "fma", "f16c"]  # the AMD EPYC the q4 default was measured on
SPR_FLAGS = [
    *AVX2_FLAGS,
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
]


def _speeds(small: float, large: float, qualifies: bool = True) -> dict:
    return {"qualifies": qualifies, "sentences_per_second": {"small": small, "large": large}}


# Recorded timings (sentences/s at batch 1 / 32). The Xeon's (AVX-512 BF16, AMX) are a 2-core run
# of the route choice of this project (README "Routes per CPU"); the AVX2 machine's fp32 and q4 are
# README's AMD EPYC figures. There OpenVINO's bf16 hint has no bf16 unit to run on, and a noisy run
# may still time it first: it must not win.
XEON = {
    "fp32": _speeds(108.5, 126.4),
    "q4": _speeds(129.8, 95.1),
    "ov-f32": _speeds(96.7, 160.6),
    "ov-bf16": _speeds(227.6, 487.3),
    "int8": _speeds(300.0, 600.0),  # even if it were timed and fastest: never auto
}
AVX2 = {
    "fp32": _speeds(59.3, 100.8),
    "q4": _speeds(75.2, 74.2),
    "ov-f32": _speeds(57.0, 98.0),
    "ov-bf16": _speeds(80.0, 104.0),
}


def test_select_bf16_only_with_native_bf16_and_per_workload():
    assert autoroute.select(XEON, SPR_FLAGS) == {
        "serve": ["ov-bf16", "q4", "fp32", "ov-f32"],
        "batch": ["ov-bf16", "ov-f32", "fp32", "q4"],
    }
    # the same timings on a CPU without native bf16: the bf16 route never takes part
    no_bf16 = autoroute.select(XEON, AVX2_FLAGS)
    assert "ov-bf16" not in no_bf16["serve"] + no_bf16["batch"]
    ranked = autoroute.select(AVX2, AVX2_FLAGS)
    assert ranked["serve"][0] == "q4" and ranked["batch"][0] == "fp32"  # different winners
    # never slower than the faster of fp32 and q4 at either batch size
    for workload, size in (("serve", "small"), ("batch", "large")):
        best = max(AVX2[n]["sentences_per_second"][size] for n in ("fp32", "q4"))
        assert AVX2[ranked[workload][0]]["sentences_per_second"][size] >= best
    # a route that failed the gate or was never timed does not take part
    failed = {**AVX2, "fp32": _speeds(59.3, 100.8, qualifies=False), "q4": {"qualifies": True}}
    assert autoroute.select(failed, AVX2_FLAGS)["batch"] == ["ov-f32"]
    assert not ROUTES["int8"].auto_eligible and ROUTES["ov-bf16"].bf16


def test_native_bf16_is_read_from_flags_not_names():
    assert autoroute.native_bf16(SPR_FLAGS)
    assert not autoroute.native_bf16(AVX2_FLAGS + ["avx512f", "avx512_vnni"])  # Ice Lake-like
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 fma amx_bf16\n"
    assert autoroute.cpu_flags(cpuinfo) == ["avx", "avx2", "fma", "amx_bf16"]


def test_gate_thresholds():
    ok = {
        "cosine_vs_fp32_mean": 0.99995,
        "cosine_vs_fp32_min": 0.995,
        "batch_vs_alone_max_abs": 0.0,
    }
    assert autoroute.gate(ok) is None
    assert "mean cosine" in autoroute.gate({**ok, "cosine_vs_fp32_mean": 0.99989})
    assert "a sentence" in autoroute.gate({**ok, "cosine_vs_fp32_min": 0.9899})
    assert "batch invariance" in autoroute.gate({**ok, "batch_vs_alone_max_abs": 1e-5})


def test_altered_record_is_measured_again(tmp_path, caplog):
    path = tmp_path / "r.json"
    autoroute.save_record(path, {"version": autoroute.RECORD_VERSION, "chosen": {"batch": "fp32"}})
    assert autoroute.load_record(path)["chosen"] == {"batch": "fp32"}
    path.write_text(path.read_text().replace('"fp32"', '"int8"'))
    assert autoroute.load_record(path) is None
    assert "measuring again" in caplog.text


@pytest.mark.slow
def test_every_qualifying_route_passes_the_gate_on_dev_sentences(default_model_dir, dev_pack):
    from stilts.encoding.encoder import Encoder, available_routes
    from stilts.sample import dev_sentences

    texts = dev_sentences(dev_pack / "tatoeba", 48)
    routes = available_routes(default_model_dir)
    assert {"fp32", "q4", "int8"} <= set(routes)
    ref = Encoder(default_model_dir, precision="fp32").encode(texts, kind="bitext")
    figures = {}
    for name in routes:
        enc = Encoder(default_model_dir, precision=name)
        figures[name] = autoroute.parity(enc, ref, texts)
        if ROUTES[name].auto_eligible:
            assert autoroute.gate(figures[name]) is None, (name, figures[name])
    # dynamic int8 moves with its batch: by name only
    assert figures["int8"]["batch_vs_alone_max_abs"] > 1e-3
    if "ov-bf16" in routes:  # one padded column keeps OpenVINO's rows on one path
        assert figures["ov-bf16"]["batch_vs_alone_max_abs"] < 1e-6
        assert figures["ov-bf16"]["cosine_vs_fp32_min"] > 0.9999


@pytest.mark.slow
def test_chosen_route_is_recorded_and_reused(default_model_dir, tmp_path, monkeypatch, capsys):
    from stilts.cli import main
    from stilts.encoding.encoder import Encoder

    monkeypatch.setenv("STILTS_HOME", str(tmp_path))
    monkeypatch.delenv(autoroute.ENV, raising=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "default").symlink_to(default_model_dir)
    first = autoroute.choose("default", budget_seconds=2)
    path = Path(first["path"])
    assert path.parent == tmp_path / autoroute.RECORD_DIR
    assert first["cpu"] == autoroute.cpu_signature()
    assert first["routes"]["fp32"]["qualifies"]
    assert "int8" not in first["routes"]  # never a candidate
    stamp = path.stat().st_mtime_ns
    batch = Encoder("default")
    serve = Encoder("default", workload="serve")
    assert batch.precision == first["chosen"]["batch"]
    assert serve.precision == first["chosen"]["serve"]
    assert path.stat().st_mtime_ns == stamp  # read, not measured again
    assert main(["models", "info", "default"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cpu_route"]["chosen"] == first["chosen"]
    assert info["cpu_route"]["routes"]["fp32"]["sentences_per_second"]["large"] > 0


def _child(code: str, env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_missing_runtime_degrades_to_the_next_route_with_one_log_line(default_model_dir, tmp_path):
    """A record whose winner runs on OpenVINO, loaded where OpenVINO cannot be imported."""
    code = (
        "import sys, logging\n"
        "sys.modules['openvino'] = None  # not installed, as far as imports go\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from stilts.encoding import autoroute\n"
        "from stilts.encoding.encoder import Encoder\n"
        "from stilts.manifest import Manifest\n"
        f"d = {str(default_model_dir)!r}\n"
        "r = {'version': autoroute.RECORD_VERSION, 'routes': {}, 'chosen': {},\n"
        "     'ranking': {'batch': ['ov-bf16', 'fp32'], 'serve': ['ov-bf16', 'q4']}}\n"
        "autoroute.save_record(autoroute.record_path(Manifest.load(d)), r)\n"
        "print(Encoder(d).precision, Encoder(d, workload='serve').precision)\n"
    )
    env = {"STILTS_HOME": str(tmp_path), "HOME": str(tmp_path / "home")}
    r = _child(code, env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["fp32", "q4"]
    lines = [ln for ln in r.stderr.splitlines() if "ov-bf16" in ln]
    assert len(lines) == 2, r.stderr  # one per load
    assert "openvino is not installed" in lines[0] and "using fp32 instead" in lines[0]


def test_openvino_writes_nothing_under_home_and_opens_no_socket(default_model_dir, tmp_path):
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import sys, json\n"
        "events = []\n"
        "sys.addaudithook(lambda e, a: events.append(e) if e.startswith('socket.') else None)\n"
        "from stilts import Encoder\n"
        f"enc = Encoder({str(default_model_dir)!r}, precision='ov-bf16')\n"
        "v = enc.encode(['Guten Morgen', 'Good morning'], kind='bitext')\n"
        "tm = sys.modules['openvino.tools.ovc.telemetry_utils'].tm\n"
        "print(json.dumps({'events': events, 'telemetry': tm.__name__, 'dot': float(v[0] @ v[1])}))\n"
    )
    env = {
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "STILTS_HOME": str(tmp_path / "stilts-home"),
    }
    r = _child(code, env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["events"] == []  # no socket created, no name resolved
    assert out["telemetry"] == "openvino.tools.ovc.telemetry_stub"
    assert out["dot"] > 0.8
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"written under HOME: {written}"
    # an explicit route measures nothing; the one thing written is its compiled model, in the cache
    cache = tmp_path / "stilts-home"
    written = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    assert len(written) == 2 and all(w.startswith("ov-cache/") for w in written), written


def test_batcher_serves_openvino_rows_exactly_as_alone(default_model_dir, dev_pack):
    """Concurrent requests coalesced by the server's batcher on the bf16 route: each text's vector
    is bit-for-bit the one it gets alone, and a call holds one length bucket."""
    pytest.importorskip("openvino")
    import threading

    from stilts.encoding.encoder import Encoder
    from stilts.sample import dev_sentences
    from stilts.server.batcher import Batcher

    enc = Encoder(default_model_dir, precision="ov-bf16")
    assert enc.length_bucket and enc.padded_length(9) == 16 and enc.padded_length(16) == 16
    texts = dev_sentences(dev_pack / "tatoeba", 24)
    alone = np.concatenate([enc.encode([t], kind="query") for t in texts])
    b = Batcher(enc, max_wait_ms=20, max_queue_texts=200).start()
    out: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def one(i):
        barrier.wait()
        out[i] = b.embed([texts[i]])[0][0]

    try:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        b.stop()
    assert b.batches < len(texts), "requests were not coalesced"
    np.testing.assert_array_equal(np.stack([out[i] for i in range(len(texts))]), alone)


@pytest.mark.slow
def test_mining_cache_is_keyed_by_the_route(default_model_dir, dev_pack, tmp_path):
    """A mining job on the bf16 route does not reuse (or spoil) the fp32 route's cached vectors,
    and reuses its own."""
    pytest.importorskip("openvino")
    from conftest import read_tatoeba

    from stilts.encoding.encoder import Encoder
    from stilts.index.minefiles import mine_files

    de, en = read_tatoeba(dev_pack, "de", 40)
    (tmp_path / "de.txt").write_text("\n".join(de) + "\n", encoding="utf-8")
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"

    def mine(route: str) -> dict:
        enc = Encoder(default_model_dir, precision=route)
        args = (tmp_path / "de.txt", tmp_path / "en.txt", tmp_path / f"{route}.tsv")
        return mine_files(*args, model=enc, cache_dir=cache, progress=False)

    fp32, bf16, again = mine("fp32"), mine("ov-bf16"), mine("ov-bf16")
    assert fp32["precision"] == "fp32" and bf16["precision"] == "ov-bf16"
    assert bf16["src"]["cached_chunks_reused"] == 0  # not fp32's vectors
    assert again["src"]["cached_chunks_reused"] >= 1
    assert len(list(cache.glob("emb-*.npy"))) == 4  # two sides x two routes
    assert fp32["pairs"] >= 35 and bf16["pairs"] >= 35
