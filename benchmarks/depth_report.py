"""Issue 28's depth table: accuracy and whole-process speed per encoder depth, from bench JSON.

Accuracy comes from one ``stilts bench accuracy`` JSON per dev pack (every model of the study in
one run, the 12-layer default first); speed from one ``stilts bench speed --sections process`` JSON
per model (each with USE-multilingual v3 in the same run, so every ratio has its own baseline).
A model's depth is its manifest's pooled layer. ``training/recipes/depth_cpu.sh table`` prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stilts.benchmarks.goals import pack_means
from stilts.benchmarks.systems import model_label

ACCURACY = (
    ("Tatoeba xx->en, cosine", "Tatoeba xx->en cos"),
    ("BUCC F1, oracle threshold", "BUCC F1 oracle"),
)


def _depth(path: str) -> int | None:
    """The model's pooled layer from its manifest (None: the directory is not here any more)."""
    from stilts.manifest import MANIFEST_NAME, Manifest

    return Manifest.load(path).layer if (Path(path) / MANIFEST_NAME).is_file() else None


def rows(accuracy: list[dict], speed: list[dict]) -> list[dict]:
    """One row per model: depth, per-pack means (points) and the process figures vs USE."""
    out: dict[str, dict] = {}
    for results in accuracy:
        ref = results["comparison"]["reference"]
        pack = Path(results["data"]["tatoeba"]["path"]).parent.name
        for name in results["models"]:
            means = pack_means(results, ref, name)
            row = out.setdefault(name, {"model": name, "accuracy": {}})
            row["accuracy"][pack] = {label: means[label]["tuned"] for label, _ in ACCURACY}
            row.setdefault("path", results["models"][name]["system"]["path"])
    for r in speed:
        p = r["sections"]["process"]
        name = model_label(p["model"])
        row = out.setdefault(name, {"model": name, "accuracy": {}})
        stilts = p["systems"]["stilts"]
        row["speed"] = {
            "route": p["route"],
            "many_ratio": p["ratios"]["many"]["wall_seconds"],
            "one_seconds": stilts["one"]["wall_seconds"],
            "many_rss_mb": stilts["many"]["peak_rss_mb"],
            "serve_rss_mb": (p.get("serve") or {}).get("peak_rss_mb"),
            "cpu": r["header"]["machine"]["cpu"],
            "cpu_flags": r["header"]["machine"]["cpu_flags"],
        }
        row.setdefault("path", p["model"])
    for row in out.values():
        row["depth"] = _depth(row["path"])
    return sorted(out.values(), key=lambda r: (-(r["depth"] or 0), r["model"]))


def markdown(table: list[dict]) -> str:
    packs = sorted({p for r in table for p in r["accuracy"]})
    head = ["model", "layers"]
    head += [f"{p}: {short}" for p in packs for _, short in ACCURACY]
    head += ["4,000 sentences, wall vs USE", "1 sentence s", "peak RSS MB", "serve RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in table:
        cells = [f"`{r['model']}`", str(r["depth"] or "-")]
        for p in packs:
            acc = r["accuracy"].get(p, {})
            cells += [f"{acc[label]:.1f}" if label in acc else "-" for label, _ in ACCURACY]
        s = r.get("speed")
        if s:
            serve = f"{s['serve_rss_mb']:,.0f}" if s["serve_rss_mb"] else "-"
            cells += [
                f"{s['many_ratio']:.2f}x",
                f"{s['one_seconds']:.2f}",
                f"{s['many_rss_mb']:,.0f}",
                serve,
            ]
        else:
            cells += ["-"] * 4
        lines.append("| " + " | ".join(cells) + " |")
    cpus = {(s["cpu"], " ".join(s["cpu_flags"])) for r in table if (s := r.get("speed"))}
    for cpu, flags in sorted(cpus, key=str):
        lines += ["", f"Speed measured on {cpu} (flags `{flags}`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stilts.benchmarks.depth_report",
        description="Print issue 28's depth table (accuracy per dev pack and whole-process speed "
        "vs USE-multilingual v3, per model and depth) from bench JSON files.",
    )
    p.add_argument(
        "--accuracy", nargs="*", default=[], help="`stilts bench accuracy` JSON, one per pack"
    )
    p.add_argument(
        "--speed",
        nargs="*",
        default=[],
        help="`stilts bench speed --sections process` JSON, one per model",
    )
    p.add_argument("--json", action="store_true", help="the rows as JSON instead of Markdown")
    args = p.parse_args(argv)
    load = [json.loads(Path(f).read_text()) for f in args.accuracy]
    speed = [json.loads(Path(f).read_text()) for f in args.speed]
    table = rows(load, speed)
    print(json.dumps(table, indent=2) if args.json else markdown(table), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
