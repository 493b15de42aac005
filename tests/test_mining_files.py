"""``stilts mine`` end to end on real dev-pack text with the default model: output, dedupe,
caches, resume after a kill, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stilts.cli import main
from stilts.index.minefiles import mine_files
from stilts.index.scan import dedupe, scan
from stilts.index.textmine import mine_sides, text_side

ROOT = Path(__file__).resolve().parent.parent


def bucc_rows(dev_pack: Path, lang: str, side: str) -> list[tuple[str, str]]:
    path = dev_pack / "bucc" / f"{lang}-en" / f"{lang}-en.training.{side}"
    return [tuple(line.rstrip("\n").split("\t", 1)) for line in path.open(encoding="utf-8")]


@pytest.fixture(scope="module")
def small_pair(dev_pack, tmp_path_factory):
    """~150 German and ~170 English BUCC lines holding 100 gold pairs, plus a duplicated
    sentence (two ids) and an empty sentence."""
    gold = [
        tuple(line.split()) for line in (dev_pack / "bucc" / "de-en" / "de-en.training.gold").open()
    ][:100]
    de = dict(bucc_rows(dev_pack, "de", "de"))
    en = dict(bucc_rows(dev_pack, "de", "en"))
    gold_de = {g[0] for g in gold}
    gold_en = {g[1] for g in gold}
    extra_de = [i for i in de if i not in gold_de][:50]
    extra_en = [i for i in en if i not in gold_en][:70]
    d = tmp_path_factory.mktemp("pair")
    de_ids = sorted(gold_de | set(extra_de))
    en_ids = sorted(gold_en | set(extra_en))
    dup_of = gold[0][0]
    with open(d / "de.txt", "w", encoding="utf-8") as f:
        for i in de_ids:
            f.write(f"{i}\t{de[i]}\n")
        f.write(f"de-dup\t{de[dup_of]}\n")
        f.write("de-empty\t \n")
    with open(d / "en.txt", "w", encoding="utf-8") as f:
        for i in en_ids:
            f.write(f"{i}\t{en[i]}\n")
    return d, set(gold), dup_of


def read_tsv(path: Path) -> list[tuple[float, str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        score, a, b = line.split("\t")
        rows.append((float(score), a, b))
    return rows


def test_scan_detects_layout_and_deduplicates(small_pair):
    d, _, dup_of = small_pair
    side = scan(d / "de.txt")
    assert side.has_ids and side.n_lines == 152
    assert side.n_unique == 150 and side.n_empty == 1
    lines = (d / "de.txt").read_text(encoding="utf-8").splitlines()
    first = next(n for n, line in enumerate(lines) if line.startswith(dup_of + "\t"))
    assert side.inverse[first] == side.inverse[150]  # the duplicate maps to the same row
    plain = d / "plain.txt"
    plain.write_text("Hallo Welt\nGuten Tag\tmit Tab?\nHallo Welt\n", encoding="utf-8")
    side = scan(plain)
    assert not side.has_ids and side.n_unique == 2


@pytest.mark.slow
def test_mine_files_output_summary_and_cache_reuse(small_pair, encoder, tmp_path):
    d, gold, dup_of = small_pair
    out = tmp_path / "pairs.tsv"
    summary = mine_files(d / "de.txt", d / "en.txt", out, model=encoder, chunk_size=40)
    rows = read_tsv(out)
    assert rows and [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    assert summary["pairs"] == len({(a if a != "de-dup" else dup_of, b) for _, a, b in rows})
    assert summary["src"]["unique"] == 150 and summary["src"]["empty"] == 1
    assert summary["src"]["chunks"] == 4 and summary["src"]["cached_chunks_reused"] == 0
    assert json.loads(out.with_name("pairs.tsv.json").read_text()) == summary
    # Mined pairs are mostly gold pairs; both ids of the duplicated sentence are listed.
    top = [(a, b) for _, a, b in rows[:60]]
    assert sum(p in gold for p in top) >= 50
    dup_targets = {b for _, a, b in rows if a == dup_of}
    assert dup_targets and dup_targets == {b for _, a, b in rows if a == "de-dup"}
    assert all(a != "de-empty" for _, a, _ in rows)

    again = mine_files(d / "de.txt", d / "en.txt", out, model=encoder, chunk_size=40)
    assert again["src"]["cached_chunks_reused"] == 4 and again["tgt"]["cached_chunks_reused"] == 5
    assert again["seconds"]["encode"] < summary["seconds"]["encode"] / 3
    assert read_tsv(out) == rows

    cut = next(i for i in range(10, len(rows) - 1) if rows[i][0] > rows[i + 1][0] + 2e-6)
    threshold = (rows[cut][0] + rows[cut + 1][0]) / 2
    thresholded = mine_files(
        d / "de.txt", d / "en.txt", tmp_path / "t.tsv", model=encoder, chunk_size=40,
        threshold=threshold, cache_dir=out.with_name("pairs.tsv.cache"),
    )  # fmt: skip
    assert thresholded["src"]["cached_chunks_reused"] == 4
    assert read_tsv(tmp_path / "t.tsv") == rows[: cut + 1]


def test_lines_layout_writes_sentences(encoder, tmp_path):
    (tmp_path / "de.txt").write_text(
        "Die Datei wurde nicht gefunden.\nSpeichern unter …\n\nDrucken\nDrucken\n",
        encoding="utf-8",
    )
    (tmp_path / "en.txt").write_text(
        "Print\nThe file was not found.\nSave as…\nQuit\n", encoding="utf-8"
    )
    out = tmp_path / "out.tsv"
    summary = mine_files(tmp_path / "de.txt", tmp_path / "en.txt", out, model=encoder)
    assert summary["src"] == {**summary["src"], "ids": False, "unique": 3, "empty": 1}
    pairs = {(a, b) for _, a, b in read_tsv(out)}
    assert ("Die Datei wurde nicht gefunden.", "The file was not found.") in pairs
    assert ("Drucken", "Print") in pairs
    assert len(pairs) == 3


def test_lists_dedupe_as_files_do(tmp_path):
    texts = ["b", "", " a ", "b", "a", "c"]
    path = tmp_path / "s.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    side = scan(path, "lines")
    unique, first = dedupe(texts)
    assert unique == ["b", "a", "c"]
    assert first.tolist() == side.first_line.tolist() == [0, 2, 5]


def test_text_sides_map_back_to_input_positions(encoder):
    src = ["Drucken", "", "Die Datei wurde nicht gefunden.", "Drucken"]
    tgt = ["Quit", "The file was not found.", "Print"]

    def embed(texts):
        return encoder.encode(texts, kind="bitext")

    pairs, estimate = mine_sides(text_side(src, embed, "src"), text_side(tgt, embed, "tgt"))
    assert estimate is None  # no threshold asked for
    assert {(p.src_index, p.tgt_index) for p in pairs} == {(0, 2), (2, 1)}
    assert {(p.src_text, p.tgt_text) for p in pairs} == {
        ("Drucken", "Print"),
        ("Die Datei wurde nicht gefunden.", "The file was not found."),
    }
    assert [p.score for p in pairs] == sorted((p.score for p in pairs), reverse=True)


def _stilts(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "stilts.cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


@pytest.mark.slow
def test_killed_run_resumes_without_reencoding(small_pair, encoder, tmp_path):
    d, _, _ = small_pair
    out = tmp_path / "pairs.tsv"
    cache = tmp_path / "cache"
    args = ["mine", str(d / "de.txt"), str(d / "en.txt"), "-o", str(out), "--quiet"]
    args += ["--cache-dir", str(cache), "--chunk-size", "20", "--threads", "1"]
    args += ["--precision", "int8"]  # the `encoder` fixture resumes it: the same graph
    proc = _stilts(*args)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and proc.poll() is None:
        states = [json.loads(p.read_text()) for p in cache.glob("emb-*.json")]
        done = sum(len(s["done"]) for s in states)
        if done >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    summary = mine_files(
        d / "de.txt", d / "en.txt", out, model=encoder, chunk_size=20, cache_dir=cache
    )
    reused = summary["src"]["cached_chunks_reused"] + summary["tgt"]["cached_chunks_reused"]
    assert reused >= 2
    fresh = mine_files(
        d / "de.txt", d / "en.txt", tmp_path / "fresh.tsv", model=encoder, chunk_size=20
    )
    assert fresh["src"]["cached_chunks_reused"] == 0
    assert read_tsv(out) == read_tsv(tmp_path / "fresh.tsv")


def test_cli_errors_name_the_problem(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("a\tHallo\nb\tWelt\n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_text("a\tHallo\n" * 5 + "kein tab hier\n", encoding="utf-8")
    out = str(tmp_path / "o.tsv")
    assert main(["mine", str(tmp_path / "missing.txt"), str(good), "-o", out, "--quiet"]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err
    assert main(["mine", str(bad), str(good), "-o", out, "--quiet"]) == 2
    assert "bad.txt:6: expected id<TAB>sentence" in capsys.readouterr().err
    late = tmp_path / "late.txt"  # the bad line comes after the lines used for detection
    late.write_text("a\tHallo\n" * 1200 + "kein tab hier\n", encoding="utf-8")
    assert main(["mine", str(late), str(good), "-o", out, "--quiet"]) == 2
    assert "late.txt:1201: expected id<TAB>sentence" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Grüße\n".encode("latin-1"))
    assert main(["mine", str(latin1), str(good), "-o", out, "--quiet"]) == 2
    assert "latin1.txt:1: not valid UTF-8" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mine", str(good), str(good), "-o", out, "--margin", "csls"])
    assert main(["mine", str(good), str(good), "-o", out, "--k", "0", "--quiet"]) == 2
    assert "k must be" in capsys.readouterr().err


def test_cli_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["mine", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--output", "--model", "--k", "--margin", "--retrieval", "--threshold", "--index",
        "--engine", "--ray-address", "--server", "--input-format", "--cache-dir",
    ):  # fmt: skip
        assert flag in text


@pytest.mark.slow
def test_cli_mines_on_a_server(small_pair, encoder_fp32, tmp_path, capsys):
    """``--server``: the files go to a real stilts server on a loopback port; same format. fp32:
    its vectors do not move with their batch, so the server and a local job see the same scores."""
    from stilts.server import start_server

    d, gold, _ = small_pair
    srv = start_server(tmp_path / "data", encoders={"default": encoder_fp32})
    try:
        out = tmp_path / "remote.tsv"
        args = ["mine", str(d / "de.txt"), str(d / "en.txt"), "-o", str(out)]
        assert main([*args, "--server", srv.address, "--quiet"]) == 0
    finally:
        srv.stop(5)
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "server" and summary["pairs"] > 0
    rows = read_tsv(out)
    assert [r[0] for r in rows] == sorted((r[0] for r in rows), reverse=True)
    top = [(a, b) for _, a, b in rows[:60]]
    assert sum(p in gold for p in top) >= 50, "ids, not sentences, and mostly gold pairs"
    # the default threshold is auto, chosen on the server: its estimate comes back
    est = summary["threshold_auto"]
    assert est["method"] == "order-stats" and summary["threshold"] == est["threshold"]
    assert min(float(r[0]) for r in rows) >= est["threshold"] - 1e-6
    local = tmp_path / "local.tsv"
    here = mine_files(d / "de.txt", d / "en.txt", local, model=encoder_fp32, progress=False,
                      threshold="auto")  # fmt: skip
    # the same vectors (the server batches differently; fp32 rows do not see their batch)
    assert here["threshold"] == pytest.approx(est["threshold"], abs=1e-4)
    remote_pairs = {(a, b) for _, a, b in rows}
    local_pairs = {(a, b) for _, a, b in read_tsv(local) if a != "de-dup"}
    assert len(remote_pairs & local_pairs) >= 0.98 * max(len(local_pairs), len(remote_pairs))
