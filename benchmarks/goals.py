"""Issue 17's goals for a tuned encoder, checked on ``stilts bench accuracy`` results.

Each pack's JSON holds the base (the run's reference, its first ``--model``) and the tuned model
on every language of the pack. Goals, in points (accuracy or F1 x 100):

- interface strings (``bitext-dev``): Tatoeba xx->en mean cosine >= +3.0 over the base, no
  language below -1.0, BUCC-style oracle F1 mean >= +2.0;
- documentation prose (``docs-dev``): no regression of the Tatoeba xx->en cosine mean or of the
  BUCC-style oracle F1 mean (moonshot: Tatoeba +1.0).

``serves_default`` is true when every goal holds; ``no_regression`` when no mean falls on either
pack (what a model must meet to ship at all).

Issue 28's rule for a shallower encoder (``--depth``, the 12-layer default as the reference): it
replaces ``default`` only when its Tatoeba xx->en cosine mean and BUCC-style oracle F1 mean are
within :data:`DEPTH_TOLERANCE` points of the reference on both packs; otherwise it ships as
``default-fast``.

Issue 27's goals for a successor of the tuned default (``--successor HELP_JSON``, the current
default as ``--reference``), in points over it: interface strings Tatoeba xx->en cosine mean
>= +2.0, no language below -1.0, the languages under 70 with the reference >= +5.0 on average,
BUCC-style oracle F1 no regression and ja, zh at least USE-multilingual v3's (when the JSON holds
it); documentation prose BUCC-style oracle F1 >= +1.0, Tatoeba no regression; the third domain
(``help-dev``) Tatoeba xx->en cosine >= +3.0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stilts.benchmarks import metrics

INTERFACE = {"tatoeba_gain": 3.0, "worst_language": -1.0, "bucc_gain": 2.0}
PROSE = {"tatoeba_gain": 0.0, "bucc_gain": 0.0, "moonshot_tatoeba_gain": 1.0}
DEPTH_TOLERANCE = 0.5
SUCCESSOR = {
    "interface_tatoeba_gain": 2.0,
    "worst_language": -1.0,
    "weak_below": 70.0,
    "weak_gain": 5.0,
    "prose_bucc_gain": 1.0,
    "help_tatoeba_gain": 3.0,
}
USE = "use-multilingual-v3"


MEANS = (
    ("Tatoeba xx->en, cosine", "tatoeba", ("cosine", "xx2en")),
    ("Tatoeba en->xx, cosine", "tatoeba", ("cosine", "en2xx")),
    ("Tatoeba xx->en, margin", "tatoeba", ("margin", "xx2en")),
    ("Tatoeba en->xx, margin", "tatoeba", ("margin", "en2xx")),
    ("BUCC F1, oracle threshold", "bucc", ("f1_oracle",)),
    ("BUCC F1, calibrated threshold", "bucc", ("f1_calibrated",)),
    ("BUCC F1, auto threshold", "bucc", ("f1_auto",)),
)


def _get(row: dict, path: tuple[str, ...]):
    for key in path:
        row = row.get(key) if isinstance(row, dict) else None
    return row


def pack_means(results: dict, base: str, tuned: str) -> dict:
    """Per metric of :data:`MEANS`: base and tuned means (points) on the languages both cover."""
    models = results["models"]
    out = {}
    for label, task, path in MEANS:
        if task not in models[base] or task not in models[tuned]:
            continue
        a, b = models[base][task]["per_language"], models[tuned][task]["per_language"]
        common = sorted(set(a) & set(b))
        pair = [metrics.mean(_get(m[x], path) for x in common) for m in (a, b)]
        if None not in pair:
            out[label] = {"base": 100 * pair[0], "tuned": 100 * pair[1], "languages": len(common)}
    return out


def pack_deltas(results: dict, tuned: str | None = None, base: str | None = None) -> dict:
    """Tuned minus base on one pack: Tatoeba xx->en cosine mean, per language, and BUCC oracle
    F1 mean (points, on the languages both cover), with :func:`pack_means`. ``base`` defaults to
    the run's reference (its first ``--model``), ``tuned`` to its last stilts model."""
    models = results["models"]
    base = base or results["comparison"]["reference"]
    tuned = tuned or [n for n in models if n not in (base, USE)][-1]
    out: dict = {"base": base, "tuned": tuned, "means": pack_means(results, base, tuned)}
    a, b = models[base]["tatoeba"]["per_language"], models[tuned]["tatoeba"]["per_language"]
    common = sorted(set(a) & set(b))
    per = {x: 100 * (b[x]["cosine"]["xx2en"] - a[x]["cosine"]["xx2en"]) for x in common}
    out["tatoeba_gain"] = metrics.mean(per.values())
    out["tatoeba_per_language"] = dict(sorted(per.items(), key=lambda kv: kv[1]))
    out["worst_language"] = min(per.items(), key=lambda kv: kv[1]) if per else None
    out["tatoeba_base"] = {x: 100 * a[x]["cosine"]["xx2en"] for x in common}
    if "bucc" in models[base] and "bucc" in models[tuned]:
        a, b = models[base]["bucc"]["per_language"], models[tuned]["bucc"]["per_language"]
        common = sorted(set(a) & set(b))
        bucc = {x: 100 * (b[x]["f1_oracle"] - a[x]["f1_oracle"]) for x in common}
        out["bucc_gain"] = metrics.mean(bucc.values())
        out["bucc_per_language"] = bucc
        out["bucc_tuned"] = {x: 100 * b[x]["f1_oracle"] for x in b}
    if "bucc" in models.get(USE, {}):
        use = models[USE]["bucc"]["per_language"]
        out["bucc_use"] = {x: 100 * use[x]["f1_oracle"] for x in use}
    return out


def verdict(interface: dict, prose: dict) -> dict:
    """The goals above on the two packs' :func:`pack_deltas`."""
    checks = {
        "interface_tatoeba": interface["tatoeba_gain"] >= INTERFACE["tatoeba_gain"],
        "interface_worst_language": interface["worst_language"][1] >= INTERFACE["worst_language"],
        "interface_bucc": interface.get("bucc_gain", -1) >= INTERFACE["bucc_gain"],
        "prose_tatoeba": prose["tatoeba_gain"] >= PROSE["tatoeba_gain"],
        "prose_bucc": prose.get("bucc_gain", -1) >= PROSE["bucc_gain"],
    }
    no_regression = all(
        d.get(k, -1) >= 0 for d in (interface, prose) for k in ("tatoeba_gain", "bucc_gain")
    )
    return {
        "checks": checks,
        "serves_default": all(checks.values()),
        "no_regression": no_regression,
        "moonshot_prose_tatoeba": prose["tatoeba_gain"] >= PROSE["moonshot_tatoeba_gain"],
        "interface": interface,
        "prose": prose,
    }


def depth_verdict(interface: dict, prose: dict) -> dict:
    """Issue 28's rule on the two packs' :func:`pack_deltas` (the shallow model against the
    12-layer default): ``serves_default`` when no mean falls by more than DEPTH_TOLERANCE."""
    checks = {
        f"{name}_{key}": pack.get(key, -100) >= -DEPTH_TOLERANCE
        for name, pack in (("interface", interface), ("prose", prose))
        for key in ("tatoeba_gain", "bucc_gain")
    }
    return {
        "rule": f"every mean within {DEPTH_TOLERANCE} points of the 12-layer default",
        "checks": checks,
        "serves_default": all(checks.values()),
        "interface": interface,
        "prose": prose,
    }


def successor_verdict(interface: dict, prose: dict, help_pack: dict) -> dict:
    """Issue 27's goals (module docstring) on three packs' :func:`pack_deltas` against the
    current default."""
    g = SUCCESSOR
    weak = [
        d
        for x, d in interface["tatoeba_per_language"].items()
        if interface["tatoeba_base"][x] < g["weak_below"]
    ]
    weak_gain = metrics.mean(weak) if weak else None
    use = interface.get("bucc_use", {})
    checks = {
        "interface_tatoeba": interface["tatoeba_gain"] >= g["interface_tatoeba_gain"],
        "interface_worst_language": interface["worst_language"][1] >= g["worst_language"],
        "interface_weak_languages": weak_gain is None or weak_gain >= g["weak_gain"],
        "interface_bucc": interface.get("bucc_gain", -1) >= 0,
        "prose_bucc": prose.get("bucc_gain", -1) >= g["prose_bucc_gain"],
        "prose_tatoeba": prose["tatoeba_gain"] >= 0,
        "help_tatoeba": help_pack["tatoeba_gain"] >= g["help_tatoeba_gain"],
    }
    if use:
        tuned = interface.get("bucc_tuned", {})
        checks["interface_bucc_ja_zh_vs_use"] = all(
            tuned[x] >= use[x] for x in ("ja", "zh") if x in use and x in tuned
        )
    no_regression = all(
        d.get(k, -1) >= 0
        for d in (interface, prose, help_pack)
        for k in ("tatoeba_gain", "bucc_gain")
        if k in d
    )
    return {
        "checks": checks,
        "serves_default": all(checks.values()),
        "no_regression": no_regression,
        "weak_languages": {"count": len(weak), "gain": weak_gain},
        "interface": interface,
        "prose": prose,
        "help": help_pack,
    }


PACK_NAMES = (
    ("interface", "interface strings"),
    ("prose", "documentation prose"),
    ("help", "help prose"),
)


def markdown(result: dict) -> str:
    """The packs' table (reference, candidate, delta per metric; the columns named by the models)
    and the languages that lost."""
    packs = [(name, result[key]) for key, name in PACK_NAMES if key in result]
    lines = [
        "| metric | "
        + " | ".join(f"{name}: {p['base']} | {p['tuned']} | delta" for name, p in packs)
        + " |",
        "|---|" + "---:|---:|---:|" * len(packs),
    ]
    for label, _, _ in MEANS:
        cells = []
        for _, pack in packs:
            m = pack["means"].get(label)
            cells += (
                [f"{m['base']:.1f}", f"{m['tuned']:.1f}", f"{m['tuned'] - m['base']:+.1f}"]
                if m
                else ["-", "-", "-"]
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for name, pack in packs:
        lost = [f"{x} {d:+.1f}" for x, d in pack["tatoeba_per_language"].items() if d < 0]
        lines.append("")
        lines.append(
            f"Tatoeba xx->en cosine, {name}: {len(lost)} of {len(pack['tatoeba_per_language'])} "
            f"languages lost{': ' + ', '.join(lost) if lost else ''}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stilts.benchmarks.goals",
        description="Check issue 17's goals (with --depth issue 28's rule, with --successor "
        "issue 27's) on `stilts bench accuracy` JSON files (the reference as the first --model "
        "or --reference, the candidate second or --tuned) and print the verdict as JSON.",
    )
    p.add_argument("interface", help="the bench JSON of the interface-string pack (bitext-dev)")
    p.add_argument("prose", help="the bench JSON of the documentation pack (docs-dev)")
    p.add_argument("--tuned", default=None, help="the tuned model's name in the JSON")
    p.add_argument(
        "--reference",
        default=None,
        help="the model judged against (default: the JSON's reference, its first --model)",
    )
    p.add_argument("--out", default=None, help="also write the verdict here")
    p.add_argument(
        "--markdown", action="store_true", help="print the two-pack table instead of the JSON"
    )
    p.add_argument(
        "--depth",
        action="store_true",
        help="issue 28's rule instead: the --tuned model is a shallower encoder judged against "
        f"the reference (the 12-layer default), every mean within {DEPTH_TOLERANCE} points",
    )
    p.add_argument(
        "--successor",
        metavar="HELP_JSON",
        default=None,
        help="issue 27's goals instead: a successor of the tuned default (give --reference "
        "default when it is not the first --model), with the bench JSON of the help-dev pack",
    )
    args = p.parse_args(argv)
    if args.depth and args.successor:
        p.error("--depth and --successor are two different rules: give one")
    files = [args.interface, args.prose] + ([args.successor] if args.successor else [])
    packs = [json.loads(Path(f).read_text()) for f in files]
    judge = depth_verdict if args.depth else successor_verdict if args.successor else verdict
    result = judge(*(pack_deltas(r, args.tuned, args.reference) for r in packs))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(markdown(result) if args.markdown else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
