"""`dpg plot RUN [RUN …]`: training curves from log.jsonl, one run or several overlaid (arms), as one PNG.

A grid sized for a screen: Φ (every step, faint, and a centred moving average), each proxy that moves and is not ±Φ
itself, the raw reward std against the advantage's eps floor, the completions' diversity and length, and the seconds
per step. The x axis counts GRPO steps, and the top axis the examples (completions) the generator has written; when
overlaid runs differ in completions per step, the x axis is examples seen, so arms compare at equal data. Torch-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from dpg.run import fsio
from dpg.run.checkpoints import CONFIG_FILE, LOG_FILE, read_log
from dpg.run.console import Console, number

TRL_STD_FLOOR = 1e-4  # TRL's fixed advantage floor, drawn for contrast with dpg's relative one


@dataclass
class Run:
    name: str
    rows: list[dict]  # log records of scored steps (a step whose reward failed has no Φ)
    per_step: int | None  # completions per GRPO step, from the run's config.yaml (None without one)
    collapse_distinct_2: float | None

    def steps(self) -> list[int]:
        return [r["step"] for r in self.rows]

    def series(self, get) -> list[float]:
        return [get(r) for r in self.rows]


def load_run(run_dir: str | Path, warn: Callable[[str], None] | None = None) -> Run:
    """A run's scored steps. A torn line in the middle of its log loses that step only: it is left out, and `warn`
    (default: a warning on stderr) gets a line naming it."""
    run_dir = Path(run_dir)
    if not (run_dir / LOG_FILE).is_file():
        raise ValueError(f"{run_dir}: not a run directory (no {LOG_FILE}; `dpg train` writes one)")
    rows = [r for r in read_log(run_dir / LOG_FILE, warn=warn or Console().warn) if "phi" in r]
    if not rows:
        raise ValueError(f"{run_dir}: {LOG_FILE} has no scored steps yet")
    per_step = collapse = None
    if (run_dir / CONFIG_FILE).is_file():
        cfg = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
        grpo = cfg.get("grpo", {})
        if "prompts_per_step" in grpo and "num_generations" in grpo:
            per_step = grpo["prompts_per_step"] * grpo["num_generations"]
        collapse = cfg.get("logging", {}).get("collapse_distinct_2")
    return Run(str(run_dir), rows, per_step, collapse)


def smooth(values: list[float], window: int) -> list[float]:
    """Centred moving average; the window shrinks at both ends so the line spans every step."""
    half = window // 2
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - half):i + half + 1] if v is not None and math.isfinite(v)]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def _constant(values: list[float]) -> bool:
    return all(v == values[0] for v in values)


def _labels(paths: list[str]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (runs/a/seed0 and runs/b/seed0 → a/seed0, b/seed0)."""
    parts = [Path(p).resolve().parts for p in paths]
    for k in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return paths


def plot(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the curves of one or several runs to `out` (default: RUN/curves.png for one run, compare.png in the
    runs' common parent directory for several); returns the path."""
    if not run_dirs:
        raise ValueError("plot: give at least one run directory")
    fig = figure([load_run(d) for d in run_dirs])  # runs first: a wrong path fails before matplotlib loads
    out = Path(out) if out else (Path(run_dirs[0]) / "curves.png" if len(run_dirs) == 1 else
                                 Path(os.path.commonpath([Path(d).resolve() for d in run_dirs])) / "compare.png")
    tmp = out.with_name(f"{out.stem}.tmp-{os.getpid()}.png")
    with fsio.writing(out, "writing the plot"):
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    return out


def figure(runs: list[Run]):
    """The matplotlib Figure of `plot` (runs from `load_run`; several are overlaid, one colour each)."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no backend switch in a notebook
    from matplotlib.ticker import MaxNLocator

    for run, label in zip(runs, _labels([r.name for r in runs])):
        run.name = label
    several = len(runs) > 1
    per_steps = {r.per_step for r in runs}
    by_examples = several and len(per_steps) > 1 and None not in per_steps  # arms with different batch sizes

    def xs(run: Run) -> list[float]:
        return [s * run.per_step for s in run.steps()] if by_examples else run.steps()

    drawn = panels(runs)
    ncols = {1: 1, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3}.get(len(drawn), 4)  # at most 4 × 2 fills a screen
    nrows = math.ceil(len(drawn) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows + (0.5 if several else 0.3)), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for ax, (title, scale, lines) in zip(axes, drawn):
        for run_index, label, ys, style in lines:
            run = runs[run_index]
            # overlaid runs: one colour per run, except reference lines (TRL's floor, a threshold) in their own
            color = f"C{run_index}" if several and not style.get("reference") else style.get("color", "C0")
            x = xs(run)
            if style.get("raw_and_smooth") and len(ys) > 5:
                ax.plot(x, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(x, smooth(ys, max(3, len(ys) // 15 | 1)), color=color, linewidth=1.8, label=label)
            else:
                ax.plot(x, ys, color=color, linestyle=style.get("linestyle", "-"), linewidth=1.4,
                        marker="." if len(ys) <= 30 else None, label=label)
        ax.set_title(title, fontsize=11)
        ax.set_yscale(scale)
        ax.grid(alpha=0.3)
        ax.set_xlabel("examples seen (completions)" if by_examples else "GRPO step", fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and examples count: no step 1.5 in a short run
        if not by_examples and len(per_steps) == 1 and None not in per_steps:
            k = next(iter(per_steps))
            top = ax.secondary_xaxis("top", functions=(lambda s, k=k: s * k, lambda e, k=k: e / k))
            top.set_xlabel("examples seen", fontsize=9)
            top.tick_params(labelsize=8)
            top.xaxis.set_major_locator(MaxNLocator(integer=True))
        if sum(bool(label) for _, label, _, _ in lines) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(drawn):]:
        ax.set_visible(False)
    if several:
        fig.legend(handles=[_line(f"C{i}", r.name) for i, r in enumerate(runs)], loc="outside upper center",
                   ncols=min(len(runs), 4), fontsize=10)
    else:
        r = runs[0]
        fig.suptitle(f"{r.name}: {len(r.rows)} GRPO steps, Φ {number(r.rows[0]['phi'])} → "
                     f"{number(r.rows[-1]['phi'])}", fontsize=12)
    return fig


def _line(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, linewidth=2, label=label)


def panels(runs: list[Run]) -> list[tuple[str, str, list]]:
    """(title, y scale, [(run index, label, values, style)]) for each panel worth drawing: one whose own lines (not
    its reference lines) hold a finite value somewhere. distinct-2 and repetition are undefined for completions of
    under two words, so a run of them would otherwise leave a panel with a threshold line and no data."""
    several = len(runs) > 1
    found = [("Φ (higher is better)", "linear",
               [(i, "", r.series(lambda x: x["phi"]), {"raw_and_smooth": True})
                for i, r in enumerate(runs)])]
    proxy_names = list(dict.fromkeys(k for r in runs for row in r.rows for k in row["proxies"]))
    for name in proxy_names:
        lines = [(i, "", r.series(lambda x: x["proxies"].get(name, float("nan"))), {"raw_and_smooth": True})
                 for i, r in enumerate(runs)]
        values = [v for _, _, ys, _ in lines for v in ys]
        if _constant(values):  # e.g. exact_match 0 all along: nothing to see
            continue
        if all(_is_plus_minus_phi(r, ys) for (_, _, ys, _), r in zip(lines, runs)):  # a loss that is −Φ itself
            continue
        found.append((f"proxy: {name}", "linear", lines))
    scale = []
    for i, r in enumerate(runs):
        tag = f"{r.name}: " if several else ""
        scale.append((i, f"{tag}raw reward std", r.series(lambda x: x["advantage_scaling"]["raw_std"]),
                      {"color": "C0"}))
        scale.append((i, f"{tag}eps floor", r.series(lambda x: x["advantage_scaling"]["eps_floor"]),
                      {"color": "C1", "linestyle": "--"}))
    scale.append((0, f"TRL's fixed {TRL_STD_FLOOR:g}", [TRL_STD_FLOOR] * len(runs[0].rows),
                  {"color": "C7", "linestyle": ":", "reference": True}))
    found.append(("reward scale: raw std vs advantage eps", "log", scale))
    if all("text" in row for r in runs for row in r.rows):
        lines = []
        for i, r in enumerate(runs):
            lines.append((i, "" if several else "distinct-2", r.series(lambda x: _nan(x["text"]["distinct_2"])),
                          {"color": "C0", "raw_and_smooth": True}))
            if not several:
                lines.append((i, "repetition", r.series(lambda x: _nan(x["text"]["repetition"])),
                              {"color": "C3", "linestyle": "--"}))
                if r.collapse_distinct_2:
                    lines.append((i, f"collapse warning < {r.collapse_distinct_2:g}",
                                  [r.collapse_distinct_2] * len(r.rows),
                                  {"color": "C7", "linestyle": ":", "reference": True}))
        found.append(("completions: distinct-2" + ("" if several else ", repetition"), "linear", lines))
        lines = [(i, "", r.series(lambda x: x["text"]["mean_words"]), {"raw_and_smooth": True})
                 for i, r in enumerate(runs)]
        if not _constant([v for _, _, ys, _ in lines for v in ys]):
            found.append(("completions: mean length (words)", "linear", lines))
    if several:
        found.append(("seconds per step", "linear",
                       [(i, "", r.series(lambda x: x["seconds"]["total"]), {"raw_and_smooth": True})
                        for i, r in enumerate(runs)]))
    else:
        found.append(("seconds per step", "linear",
                       [(0, part.replace("_", " "), runs[0].series(lambda x, p=part: x["seconds"][p]),
                         {"color": f"C{j}"}) for j, part in enumerate(("generation", "reward", "policy_update"))]))
    return [panel for panel in found if any(math.isfinite(v) for _, _, ys, style in panel[2]
                                            if not style.get("reference") for v in ys)]


def _nan(v: float | None) -> float:
    return float("nan") if v is None else v


def _is_plus_minus_phi(run: Run, values: list[float]) -> bool:
    phi = run.series(lambda x: x["phi"])
    return any(all(abs(v - sign * p) <= 1e-9 * max(1.0, abs(p)) for v, p in zip(values, phi)) for sign in (1, -1))
