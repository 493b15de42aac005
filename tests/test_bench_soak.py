"""``stilts bench speed --soak MINUTES`` at a tiny size: a real server in a subprocess, mixed
traffic, figures per window, JSON and Markdown written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "sentences.tsv"


@pytest.mark.slow
def test_soak_tiny_run_writes_windows_errors_and_rss(tmp_path, default_model_dir):
    tatoeba = tmp_path / "tatoeba"
    tatoeba.mkdir()
    rows = [line.rstrip("\n").split("\t", 1)[1] for line in EXAMPLES.open(encoding="utf-8")]
    (tatoeba / "xx-en.tsv").write_text("".join(f"{r}\t{r}\n" for r in rows), encoding="utf-8")
    out, report = tmp_path / "soak.json", tmp_path / "soak.md"
    cmd = [sys.executable, "-m", "stilts.cli", "bench", "speed", "--soak", "0.1"]
    cmd += ["--soak-clients", "4", "--soak-window", "2", "--tatoeba", str(tatoeba)]
    cmd += ["--model", str(default_model_dir), "--output", str(out), "--report", str(report)]
    r = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    soak = json.loads(out.read_text())["sections"]["soak"]
    t = soak["totals"]
    assert t["attempted"] > 20 and t["ok"] == t["attempted"], t
    assert t["errors"] == {} and soak["server_alive_at_end"] and soak["server_exit_code"] == 0
    assert len(soak["windows"]) >= 3  # 6 s in 2 s windows
    seen = {op for w in soak["windows"] for op in w["operations"]}
    assert seen == {"search", "add", "delete", "get"}
    for w in soak["windows"]:
        for o in w["operations"].values():
            assert o["ok"] == 0 or 0 < o["p50_ms"] <= o["p99_ms"]
    assert soak["rss_mb"]["samples"] >= 2 and soak["rss_mb"]["max"] > 50
    assert soak["index_documents_end"] > 0
    text = report.read_text()
    assert "Errors by code: none" in text and "| window start (s) |" in text
