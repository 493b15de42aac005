"""PNG charts with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def grouped_bars(
    path: str | Path,
    categories: Sequence[str],
    series: dict[str, Sequence[float | None]],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    log: bool = False,
) -> Path:
    """One group of bars per category, one bar per series (None = no bar). Returns the path."""
    plt = _pyplot()
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    fig_w = min(max(6.0, 0.22 * len(categories) * n_series + 4), 48.0)
    fig, ax = plt.subplots(figsize=(fig_w, 4.2))
    for j, (name, values) in enumerate(series.items()):
        xs = [i + (j - (n_series - 1) / 2) * width for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.bar(xs, ys, width=width, label=name)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels(categories, rotation=90 if len(categories) > 12 else 0, fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    LOG.info("wrote %s", out)
    return out


def lines(
    path: str | Path,
    xs: Sequence[float],
    series: dict[str, Sequence[float | None]],
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """One line per series over ``xs`` (None points skipped). Returns the path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, values in series.items():
        pts = [(x, y) for x, y in zip(xs, values, strict=True) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    LOG.info("wrote %s", out)
    return out


def markdown_section(plot_paths: Sequence[Path], base: Path | None) -> list[str]:
    """A report's ``## Plots`` lines (none without plots); paths relative to ``base`` if inside."""
    if not plot_paths:
        return []
    lines = ["## Plots", ""]
    for p in plot_paths:
        rel = p.relative_to(base) if base and p.is_relative_to(base) else p
        lines.append(f"![{p.stem}]({rel})")
    return [*lines, ""]
