"""Table and plots of the fidelity cells (experiments/fidelity.py writes them; this reads them).

    python -m experiments.fidelity --report

Writes docs/results/fidelity/table.md (one row per cell: cosine to the truth ± standard error per estimator; "≡ 0"
where every estimate was exactly zero, which counts as cosine 0 in the pooled tables),
cosine_vs_n.png (per objective × optimizer, cosine against N per estimator, one line style per M) and frontier.png
(cosine against seconds per dataset, per optimizer and N, averaged over objectives: the curve to pick an estimator).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

from dpg.stats import mean_se  # noqa: E402

RESOLVED = 0.5  # a truth with a larger relative standard error caps every cosine well below 1: "not resolved"
SHOWN = ["naive", "naive_raw", "metagrad", "first_order", "loo", "lgo2", "lgo4", "lgo8", "lgo16"]
COLORS = {"naive": "C2", "naive_raw": "#9fd89f", "metagrad": "C0", "first_order": "C3", "loo": "k", "lgo2": "#c6a0e8", "lgo4": "#a36fd6",
          "lgo8": "#7a3fb8", "lgo16": "#4d1a8a", "naive_equal_compute": "C8"}


def load(out: Path, folder: str = "cells") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / folder).glob("*.json"))]


def fmt(mean_and_se) -> str:
    mean, se = mean_and_se
    return f"{mean:+.2f} ± {se:.2f}"


def table(cells: list[dict]) -> str:
    head = ("| objective | opt (lr) | N | M | truth rel. SE | large-N limit cos | " + " | ".join(SHOWN)
            + " | naive @ metagrad's compute | cell s | command |\n|" + "---|" * (9 + len(SHOWN)) + "\n")
    rows = []
    for c in sorted(cells, key=lambda c: (c["objective"], c["optimizer"], c["M"], c["N"])):
        cos = c["cosine"]
        rows.append(f"| {c['objective']} | {c['optimizer']} ({c['lr']:g}) | {c['N']} | {c['M']} | {c['truth']['relative_se']:.2f} | "
                    f"{c['large_n_limit_cosine']:+.2f} | "
                    + " | ".join("≡ 0" if e in c.get("zero_estimates", []) else fmt(cos[e]) if e in cos else "–"
                                 for e in SHOWN)
                    + f" | {fmt(c['naive_equal_compute']['cosine'])} | {c['wall_seconds']:.0f} | `{c['command']}` |")
    return head + "\n".join(rows) + "\n"


def summary(cells: list[dict], by: str = "N") -> str:
    """Per optimizer and N (or M), averaged over objectives and the other of N, M: the paired difference metagrad −
    naive and loo − metagrad with its standard error over cells (cells are independent runs)."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["optimizer"], c[by])].append(c)
    lines = [f"| opt | {by} | cells | metagrad − naive | metagrad − naive @ equal compute | loo − metagrad | "
             "lgo8 − metagrad |", "|---|---|---|---|---|---|---|"]
    for (opt, n), cs in sorted(groups.items()):
        def diff(a, b):
            return fmt(mean_se([a(c) - b(c) for c in cs]))
        mg = lambda c: c["cosine"]["metagrad"][0]  # noqa: E731
        lgo8 = lambda c: c["cosine"]["lgo8"][0]  # noqa: E731  (a fixed G: the max over G would be biased up)
        lines.append(f"| {opt} | {n} | {len(cs)} | {diff(mg, lambda c: c['cosine']['naive'][0])} | "
                     f"{diff(mg, lambda c: c['naive_equal_compute']['cosine'][0])} | "
                     f"{diff(lambda c: c['cosine']['loo'][0], mg)} | {diff(lgo8, mg)} |")
    return "\n".join(lines) + "\n"


def means(cells: list[dict]) -> str:
    """Mean cosine per estimator over the cells of each optimizer × M (objectives and N pooled)."""
    groups = defaultdict(list)
    for c in cells:
        groups[(c["optimizer"], c["M"])].append(c)
    cols = SHOWN + ["naive_equal_compute"]
    lines = ["| opt | M | cells | " + " | ".join(cols) + " |", "|" + "---|" * (3 + len(cols))]
    for (opt, m), cs in sorted(groups.items()):
        def mean(e):
            vals = [c["naive_equal_compute"]["cosine"][0] if e == "naive_equal_compute" else c["cosine"][e][0]
                    for c in cs if e == "naive_equal_compute" or e in c["cosine"]]
            return f"{sum(vals) / len(vals):+.2f}"
        lines.append(f"| {opt} | {m} | {len(cs)} | " + " | ".join(mean(e) for e in cols) + " |")
    return "\n".join(lines) + "\n"


def plot_cosine_vs_n(cells: list[dict], path: Path) -> None:
    panels = sorted({(c["objective"], c["optimizer"]) for c in cells})
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    styles = {1: "-", 4: "--", 16: ":"}
    for ax, (obj, opt) in zip(axes.flat, panels):
        mine = [c for c in cells if c["objective"] == obj and c["optimizer"] == opt]
        for m in sorted({c["M"] for c in mine}):
            cs = sorted((c for c in mine if c["M"] == m), key=lambda c: c["N"])
            for e in ["naive", "metagrad", "first_order", "loo", "lgo8"]:
                pts = [(c["N"], *c["cosine"][e]) for c in cs if e in c["cosine"]]
                if pts:
                    ns, ys, ses = zip(*pts)
                    ax.errorbar(ns, ys, yerr=ses, color=COLORS[e], ls=styles.get(m, "-"), marker=".", capsize=2,
                                label=f"{e}, M={m}")
        ax.set_xscale("log", base=2)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(f"{obj}, inner {opt}", fontsize=10)
        ax.set_xlabel("N (examples per SFT run)")
        ax.set_ylim(-1.05, 1.05)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("cosine to true ∇J")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_frontier(cells: list[dict], path: Path) -> None:
    """Cosine against seconds per dataset (SFT compute per reward), averaged over objectives, per optimizer × N."""
    keys = sorted({(c["optimizer"], c["N"]) for c in cells})
    fig, axes = plt.subplots(2, (len(keys) + 1) // 2, figsize=(4.2 * ((len(keys) + 1) // 2), 7), squeeze=False)
    for ax, (opt, n) in zip(axes.flat, keys):
        cs = [c for c in cells if c["optimizer"] == opt and c["N"] == n]
        for e in SHOWN:
            have = [c for c in cs if e in c["cosine"]]
            if not have:
                continue
            x = sum(c["seconds_per_dataset"][e] / c["seconds_per_dataset"]["naive"] for c in have) / len(have)
            y = sum(c["cosine"][e][0] for c in have) / len(have)
            ax.scatter(x, y, color=COLORS[e], s=30, zorder=3)
            ax.annotate(e, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        eq = sum(c["naive_equal_compute"]["cosine"][0] for c in cs) / len(cs)
        x_mg = sum(c["seconds_per_dataset"]["metagrad"] / c["seconds_per_dataset"]["naive"] for c in cs) / len(cs)
        ax.scatter(x_mg, eq, color=COLORS["naive_equal_compute"], marker="s", s=30, zorder=3)
        ax.annotate("naive, metagrad's compute", (x_mg, eq), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks([1, 2, 4, 8, 16])
        ax.set_ylim(-0.5, 1.05)
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_title(f"inner {opt}, N = {n} ({len(cs)} cells)", fontsize=10)
        ax.set_xlabel("seconds per dataset (× naive's one SFT run)")
        ax.set_ylabel("mean cosine to true ∇J")
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(out: Path) -> None:
    cells = load(out)
    if not cells:
        print(f"no cells in {out / 'cells'}")
        return
    seconds = sum(c["wall_seconds"] for c in cells) / 60
    resolved = [c for c in cells if c["truth"]["relative_se"] <= RESOLVED and c["N"] > c["M"]]
    text = (f"{len(cells)} cells, {seconds:.0f} minutes of cell wall time in all. The whole grid: "
            "`python -m experiments.fidelity`; one row: its command (add `--force` to recompute a finished cell).\n\n"
            + table(cells) + "\n" + summary(cells) + "\n" + summary(cells, by="M") + "\n" + means(cells)
            + f"\n### Cells whose truth is resolved (relative SE ≤ {RESOLVED}) and whose steps hold more than one example\n\n"
            + summary(resolved, by="M") + "\n" + means(resolved))
    ablation = load(out, "cells_lr")
    if ablation:
        text += "\n### lr ablation (cells_lr/)\n\n" + table(ablation)
    (out / "table.md").write_text(text)
    plot_cosine_vs_n(cells, out / "cosine_vs_n.png")
    plot_frontier(cells, out / "frontier.png")
    print(f"{len(cells)} cells -> {out / 'table.md'}, {out / 'cosine_vs_n.png'}, {out / 'frontier.png'}")
