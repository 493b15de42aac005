"""Render ``stilts bench accuracy`` results: Markdown tables and PNG bar charts."""

from __future__ import annotations

from pathlib import Path

from stilts.benchmarks import plots

WIN_MARGIN = 0.01  # differences below one point are reported as ties


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _d(v: float | None) -> str:
    return "" if v is None else f" ({v * 100:+.1f})"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _header_lines(results: dict) -> list[str]:
    head = results.get("header", {})
    m = head.get("machine", {})
    v = head.get("versions", {})
    s = results.get("settings", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    lines = [
        "# stilts bench accuracy",
        "",
        f"- created: {head.get('created', '-')}",
        f"- command: `{' '.join(head.get('command') or [])}`",
        f"- machine: {m.get('cpu', '-')}, {m.get('cpu_count', '-')} cores, "
        f"{m.get('memory_gib', '-')} GiB, load {m.get('load_average', '-')}",
        f"- versions: {vers}",
        f"- scoring: Tatoeba headline = {s.get('scoring')}; margin {s.get('margin')}, "
        f"k={s.get('k')}, BUCC candidates = `{s.get('retrieval')}` retrieval, all pairs scored "
        "(no threshold), then thresholds swept",
    ]
    for key, d in results.get("data", {}).items():
        if d:
            lines.append(
                f"- data {key}: `{d.get('path')}` ({len(d.get('files', {}))} files hashed)"
            )
    return lines + [""]


def _summary(results: dict) -> list[str]:
    models = results["models"]
    comp = results.get("comparison", {})
    ref = comp.get("reference")
    lines = ["## Summary", ""]
    tat = comp.get("tatoeba")
    bucc = comp.get("bucc")
    if tat or bucc:
        lines.append(
            f"Means over the languages every system covers (Tatoeba: {len(tat['common_languages']) if tat else 0}"
            f", BUCC: {len(bucc['common_languages']) if bucc else 0}); deltas in points vs "
            f"`{ref}`."
        )
        lines.append("")
        header = ["system", "role"]
        if tat:
            header += ["xx→en cos", "xx→en margin", "en→xx cos", "en→xx margin"]
        if bucc:
            header += ["BUCC F1 oracle", "BUCC F1 calibrated", "BUCC F1 auto"]
        rows = []
        for name, m in models.items():
            row = [f"`{name}`", m["role"]]
            if tat:
                t = tat["means"].get(name)
                if t:
                    dd = t["delta"]
                    row += [
                        _f(t["cosine_xx2en"]) + _d(dd["cosine_xx2en"] if name != ref else None),
                        _f(t["margin_xx2en"]) + _d(dd["margin_xx2en"] if name != ref else None),
                        _f(t["cosine_en2xx"]) + _d(dd["cosine_en2xx"] if name != ref else None),
                        _f(t["margin_en2xx"]) + _d(dd["margin_en2xx"] if name != ref else None),
                    ]
                else:
                    row += ["-"] * 4
            if bucc:
                b = bucc["means"].get(name)
                if b:
                    dd = b["delta"]
                    row += [
                        _f(b["f1_oracle"]) + _d(dd["f1_oracle"] if name != ref else None),
                        _f(b["f1_calibrated"]) + _d(dd["f1_calibrated"] if name != ref else None),
                        _f(b.get("f1_auto")) + _d(dd.get("f1_auto") if name != ref else None),
                    ]
                else:
                    row += ["-"] * 3
            rows.append(row)
        lines += _table(header, rows, "ll" + "r" * (len(header) - 2)) + [""]

    lines += ["Each system on all the languages it covers:", ""]
    rows = []
    for name, m in models.items():
        t, b, e = m.get("tatoeba"), m.get("bucc"), m.get("encode", {})
        rows.append(
            [
                f"`{name}`",
                str(t["n_languages"]) if t else "-",
                _f(t["mean_xx2en"]) if t else "-",
                _f(t["mean_en2xx"]) if t else "-",
                str(b["n_languages"]) if b else "-",
                _f(b["mean_f1_oracle"]) if b else "-",
                _f(b["mean_f1_calibrated"]) if b else "-",
                _f(b.get("mean_f1_auto")) if b else "-",
                _f(b["cosine"]["mean_f1_oracle"]) if b else "-",
                _f(e.get("sentences_per_second"), 0),
            ]
        )
    lines += _table(
        [
            "system",
            "Tatoeba langs",
            "xx→en",
            "en→xx",
            "BUCC langs",
            "F1 oracle",
            "F1 calibrated",
            "F1 auto",
            "F1 oracle (cosine)",
            "encode sent/s*",
        ],
        rows,
    )
    scoring = results.get("settings", {}).get("scoring")
    lines += [
        "",
        f"Tatoeba figures here use the headline scoring ({scoring}). *Encode rate while "
        "benchmarking (informational; `stilts bench speed` measures speed properly).",
        "",
    ]
    return lines


def _wins(results: dict) -> list[str]:
    """Per baseline: the languages where the reference wins, ties and loses (measured)."""
    models = results["models"]
    ref = results.get("comparison", {}).get("reference")
    if ref not in models or len(models) < 2:
        return []
    lines = ["## Where the reference wins and loses", ""]
    lines.append(
        f"Per language, `{ref}` minus each other system (Tatoeba: headline scoring, mean of "
        f"both directions; BUCC: oracle F1); differences under {WIN_MARGIN * 100:.0f} point are ties."
    )
    lines.append("")
    for name, m in models.items():
        if name == ref:
            continue
        for task, val in (
            ("tatoeba", lambda v: (v["xx2en"] + v["en2xx"]) / 2),
            ("bucc", lambda v: v["f1_oracle"]),
        ):
            if task not in m or task not in models[ref]:
                continue
            a, b = models[ref][task]["per_language"], m[task]["per_language"]
            common = sorted(set(a) & set(b))
            if not common:
                continue
            diff = {x: val(a[x]) - val(b[x]) for x in common}
            win = [
                f"{x} {diff[x] * 100:+.1f}"
                for x in sorted(common, key=lambda x: -diff[x])
                if diff[x] >= WIN_MARGIN
            ]
            lose = [
                f"{x} {diff[x] * 100:+.1f}"
                for x in sorted(common, key=lambda x: diff[x])
                if diff[x] <= -WIN_MARGIN
            ]
            ties = len(common) - len(win) - len(lose)
            lines.append(
                f"- {task}, vs `{name}` ({len(common)} languages): wins {len(win)}"
                f"{': ' + ', '.join(win) if win else ''}; loses {len(lose)}"
                f"{': ' + ', '.join(lose) if lose else ''}; ties {ties}"
            )
    return lines + [""]


def _tatoeba_tables(results: dict) -> list[str]:
    models = {n: m for n, m in results["models"].items() if "tatoeba" in m}
    if not models:
        return []
    ref = results.get("comparison", {}).get("reference")
    langs = sorted({x for m in models.values() for x in m["tatoeba"]["per_language"]})
    lines = []
    for direction, label in (("xx2en", "xx→en"), ("en2xx", "en→xx")):
        lines += [
            f"## Tatoeba {label} per language (cosine / margin; Δ = margin vs `{ref}`, points)",
            "",
        ]
        header = ["lang", "n"] + [f"`{n}`" for n in models]
        rows = []
        for x in langs:
            n = next(
                (
                    m["tatoeba"]["per_language"][x]["n"]
                    for m in models.values()
                    if x in m["tatoeba"]["per_language"]
                ),
                0,
            )
            row = [x, str(n)]
            refv = models.get(ref, {}).get("tatoeba", {}).get("per_language", {}).get(x)
            for name, m in models.items():
                v = m["tatoeba"]["per_language"].get(x)
                if v is None:
                    row.append("-")
                    continue
                cell = f"{_f(v['cosine'][direction])} / {_f(v['margin'][direction])}"
                if name != ref and refv is not None:
                    cell += _d(v["margin"][direction] - refv["margin"][direction])
                row.append(cell)
            rows.append(row)
        means = ["mean", ""]
        for m in models.values():
            t = m["tatoeba"]
            means.append(
                f"{_f(t['cosine']['mean_' + direction])} / {_f(t['margin']['mean_' + direction])}"
            )
        rows.append(means)
        lines += _table(header, rows) + [""]
    return lines


def _bucc_table(results: dict) -> list[str]:
    models = {n: m for n, m in results["models"].items() if "bucc" in m}
    if not models:
        return []
    lines = [
        "## BUCC per language",
        "",
        "Oracle: F1-optimal threshold on the scored set itself (as XTREME reports). Calibrated: "
        "threshold chosen on other data and applied unchanged. Auto: the threshold `stilts mine "
        "--threshold auto` chooses from the set's own scores (no gold), with its estimated "
        "precision beside the true one. Cosine: oracle F1 with plain cosine instead of the margin.",
        "",
    ]
    header = [
        "lang",
        "system",
        "P",
        "R",
        "F1 oracle",
        "threshold",
        "F1 calibrated",
        "P cal",
        "R cal",
        "threshold cal",
        "F1 auto",
        "P auto est. / true",
        "threshold auto",
        "F1 cosine",
        "calibrated on",
    ]
    rows = []
    langs = sorted({x for m in models.values() for x in m["bucc"]["per_language"]})
    for x in langs:
        for name, m in models.items():
            v = m["bucc"]["per_language"].get(x)
            if v is None:
                continue
            rows.append(
                [
                    x,
                    f"`{name}`",
                    _f(v["precision"]),
                    _f(v["recall"]),
                    _f(v["f1_oracle"]),
                    _f(v["threshold"], 4),
                    _f(v["f1_calibrated"]),
                    _f(v["precision_calibrated"]),
                    _f(v["recall_calibrated"]),
                    _f(v["threshold_calibrated"], 4),
                    _f(v.get("f1_auto")),
                    f"{_f(v.get('precision_auto_estimated'))} / {_f(v.get('precision_auto'))}",
                    _f(v.get("threshold_auto"), 4),
                    _f(v["f1_oracle_cosine"]),
                    v["calibrated_on"],
                ]
            )
    return lines + _table(header, rows, "ll" + "r" * 12 + "l") + [""]


def markdown(results: dict, plot_paths: list[Path] | None = None, base: Path | None = None) -> str:
    """The whole report as Markdown."""
    lines = _header_lines(results) + _summary(results) + _wins(results)
    lines += _tatoeba_tables(results) + _bucc_table(results)
    lines += plots.markdown_section(plot_paths, base)
    return "\n".join(lines)


def write_plots(results: dict, out_dir: Path, stem: str) -> list[Path]:
    """Per-language bar charts: Tatoeba accuracy per system, cosine vs margin, BUCC F1."""
    models = results["models"]
    paths = []
    tat = {n: m["tatoeba"]["per_language"] for n, m in models.items() if "tatoeba" in m}
    if tat:
        langs = sorted({x for p in tat.values() for x in p})
        scoring = results["settings"]["scoring"]
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_tatoeba.png",
                langs,
                {n: [p[x]["xx2en"] if x in p else None for x in langs] for n, p in tat.items()},
                f"Tatoeba top-1 accuracy xx→en ({scoring} scoring)",
                "accuracy",
                ylim=(0, 1.02),
            )
        )
        ref = results.get("comparison", {}).get("reference")
        if ref in tat:
            p = tat[ref]
            rl = sorted(p)
            paths.append(
                plots.grouped_bars(
                    out_dir / f"{stem}_tatoeba_scoring.png",
                    rl,
                    {
                        f"{ref} cosine": [p[x]["cosine"]["xx2en"] for x in rl],
                        f"{ref} margin": [p[x]["margin"]["xx2en"] for x in rl],
                    },
                    "Tatoeba xx→en: cosine vs margin",
                    "accuracy",
                    ylim=(0, 1.02),
                )
            )
    bucc = {n: m["bucc"]["per_language"] for n, m in models.items() if "bucc" in m}
    if bucc:
        langs = sorted({x for p in bucc.values() for x in p})
        series = {}
        for n, p in bucc.items():
            series[f"{n} oracle"] = [p[x]["f1_oracle"] if x in p else None for x in langs]
            series[f"{n} calibrated"] = [p[x]["f1_calibrated"] if x in p else None for x in langs]
        paths.append(
            plots.grouped_bars(
                out_dir / f"{stem}_bucc.png", langs, series, "BUCC F1", "F1", ylim=(0, 1.02)
            )
        )
    return paths
