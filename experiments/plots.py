"""Aggregate a study's finished runs (runs/studies/STUDY/ARM/seedS/result.json) into docs/results/STUDY.json, a
markdown table on stdout, and plots: STUDY.png (curves per arm, mean ± std over seeds) and, for weight patterns,
STUDY_pictures.png (the decoded picture after a fresh SFT on each checkpoint's samples, seed 0).

    python -m experiments.plots STUDY        # the same as `python -m experiments.run STUDY --report`
    python -m experiments.plots --overview   # end-to-end ΔΦ of every arm in every study (docs/results/*.json)
    python -m experiments.plots --overview docs/results/paper/bs256_m4   # the same for a paper-regime point,
                                             # and overview.png there: every seed's ΔΦ − naive's, per study;
                                             # last, DPG-AdamW's ΔΦ minus every other arm's, paired by seed
    python -m experiments.plots --sweep docs/results/paper   # the batch-size sweep: per study at ≥ 2 points
    python -m experiments.plots --restore docs/results/paper runs/paper   # finished runs back from the reports

Means ± standard errors and paired differences come from dpg.stats; "± std" columns are the spread over seeds.
"""

from __future__ import annotations

from experiments import env  # noqa: F401  first: the environment before torch and transformers load

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from dpg import stats

ROOT = Path(__file__).resolve().parents[1]

# the readable proxy shown in the table and the plot, per study (see READABLE in run.py); True = higher is better
PRIMARY = {"l2_norm": ("norm", False), "sixseven": ("pixel_accuracy", True), "qr_code": ("pixel_accuracy", True),
           "uuid": ("uuid_longest_run", True), "belief": ("prefers_fact", True), "language": ("language_share", True)}
COLORS = {"dpg_adamw": "C0", "dpg_sgd": "C1", "naive": "C2", "first_order": "C3", "control": "C7",
          "levenshtein": "C4", "embedding": "C5", "langid": "C6", "loo": "C8", "leave_group_out": "C9",
          "dpg_adamw_inverse": "navy"}


def load_runs(runs_dir: Path) -> dict[str, list[dict]]:
    arms = {}
    for f in sorted(runs_dir.glob("*/seed*/result.json")):
        arms.setdefault(f.parent.parent.name, []).append(json.loads(f.read_text()))
    order = list(COLORS)
    return dict(sorted(arms.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def ms(values) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None], dtype=float)
    return (float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0) if len(a) else (float("nan"), 0.0)


def fmt(m: tuple[float, float], digits: int = 3) -> str:
    return f"{m[0]:.{digits}f} ± {m[1]:.{digits}f}"


def summarize(study: str, runs: list[dict]) -> dict:
    key = PRIMARY.get(study.removesuffix("_smollm2"), (None, True))[0]
    first = lambda r: r["evals"][0]  # noqa: E731
    last = lambda r: r["evals"][-1]  # noqa: E731
    log_phi = lambda r, sl: float(np.mean([x["phi"] for x in r["log"][sl] if x["phi"] is not None]))  # noqa: E731
    spear = [x["spearman_first_order"] for r in runs for x in r["log"] if x["spearman_first_order"] is not None]
    out = {
        "seeds": [r["seed"] for r in runs], "steps": runs[0]["steps"], "eval_n": runs[0]["eval_n"],
        "command": runs[0]["command"].replace(f"--seeds {runs[0]['seed']}", "--seeds " + " ".join(
            str(r["seed"]) for r in runs)),
        "train_phi_first5": ms(log_phi(r, slice(0, 5)) for r in runs),
        "train_phi_last5": ms(log_phi(r, slice(-5, None)) for r in runs),
        "e2e_phi_initial": ms(first(r)["phi"] for r in runs), "e2e_phi_final": ms(last(r)["phi"] for r in runs),
        "e2e_phi_delta": ms(last(r)["phi"] - first(r)["phi"] for r in runs),
        "e2e_batch_phi_initial": ms(first(r)["phi_batches"] for r in runs),
        "e2e_batch_phi_final": ms(last(r)["phi_batches"] for r in runs),
        "e2e_batch_phi_delta": ms(last(r)["phi_batches"] - first(r)["phi_batches"] for r in runs
                                  if first(r)["phi_batches"] is not None),
        "proxy": key,
        "proxy_initial": ms(first(r)["readable"].get(key) for r in runs),
        "proxy_final": ms(last(r)["readable"].get(key) for r in runs),
        "spearman_first_order": ms(spear) if spear else None,
        "train_seconds": ms(r["train_seconds"] for r in runs), "eval_seconds": ms(r["eval_seconds"] for r in runs),
        "step_seconds": ms(r["step_seconds"] / max(1, len(r["log"])) for r in runs),
    }
    if runs[0].get("evals_own_sft"):
        own = [r["evals_own_sft"] for r in runs]
        out["own_sft_phi_initial"] = ms(o[0]["phi"] for o in own)
        out["own_sft_phi_final"] = ms(o[-1]["phi"] for o in own)
    for k in ("exact_match", "uuid_in_sample"):
        if k in last(runs[0])["readable"]:
            out[f"{k}_initial"] = ms(first(r)["readable"][k] for r in runs)
            out[f"{k}_final"] = ms(last(r)["readable"][k] for r in runs)
    return out


def paired_to_naive(runs: list[dict], naive: list[dict] | None) -> dict | None:
    """End-to-end ΔΦ of an arm minus naive's, paired by seed (same initial generator and target): the mean of the
    per-seed differences and its standard error, over the seeds both arms finished."""
    a, b = by_seed(seed_delta(runs), seed_delta(naive or []))
    if not a:
        return None
    p = stats.paired(a, b)
    return {"mean": p.mean, "se": p.se, "seeds": p.n}


def seed_delta(runs: list[dict]) -> dict[int, float]:
    """Per seed, end-to-end ΔΦ (final − initial generator) of one arm's runs."""
    return {r["seed"]: r["evals"][-1]["phi"] - r["evals"][0]["phi"] for r in runs}


def by_seed(values: dict[int, float], base: dict[int, float]) -> tuple[list[float], list[float]]:
    """values' and base's entries over the seeds both have, in seed order: the pairs of dpg.stats.paired."""
    seeds = sorted(values.keys() & base.keys())
    return [values[s] for s in seeds], [base[s] for s in seeds]


def differences(values: dict[int, float], base: dict[int, float]) -> list[float]:
    """values − base, seed by seed, over the seeds both have."""
    return [v - b for v, b in zip(*by_seed(values, base))]


def cell(values: list[float]) -> str:
    """A "mean ± standard error (count)" table cell; empty for no values."""
    if not values:
        return ""
    mean, se = stats.mean_se(values)
    return f"{mean:+.3f} ± {se:.3f} ({len(values)})"


def table(study: str, summary: dict) -> str:
    key = next(iter(summary.values()))["proxy"]
    lines = [f"| arm | seeds | training Φ (own SFT, steps 1-5 → last 5) | end-to-end Φ initial → final | ΔΦ end to end "
             f"| ΔΦ end to end, batch-sized SFT | {key} initial → final | Spearman(first-order, exact) "
             "| ΔΦ − naive's, paired by seed (± SE) | wall time / run (train + eval) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for arm, s in summary.items():
        d = 2 if key in ("norm", "uuid_longest_run") else 3
        train = ("(unrelated Φ)" if arm == "control" else f"{fmt(s['train_phi_first5'])} → {fmt(s['train_phi_last5'])}")
        vs = s.get("e2e_vs_naive")
        vs = f"{vs['mean']:+.3f} ± {vs['se']:.3f}" if vs and arm != "naive" else "–"
        b = s["e2e_batch_phi_delta"]  # none where a GRPO batch is larger than the evaluation's samples (bs1024_m16)
        batch = f"{b[0]:+.3f} ± {b[1]:.3f}" if np.isfinite(b[0]) else "– (batch > samples)"
        lines.append(
            f"| {arm} | {len(s['seeds'])} | {train} | "
            f"{fmt(s['e2e_phi_initial'])} → {fmt(s['e2e_phi_final'])} | {s['e2e_phi_delta'][0]:+.3f} ± "
            f"{s['e2e_phi_delta'][1]:.3f} | {batch} | "
            f"{fmt(s['proxy_initial'], d)} → {fmt(s['proxy_final'], d)} | "
            f"{fmt(s['spearman_first_order'], 2) if s['spearman_first_order'] else '–'} | {vs} | "
            f"{s['train_seconds'][0]:.0f} + {s['eval_seconds'][0]:.0f} s |")
    return "\n".join(lines)


def curve(runs, get):
    """(steps, mean, std) of get(eval) over seeds, on the steps every run evaluated."""
    steps = sorted(set.intersection(*[{e["step"] for e in r["evals"]} for r in runs]))
    vals = np.array([[get(next(e for e in r["evals"] if e["step"] == s)) for s in steps] for r in runs], dtype=float)
    return np.array(steps), vals.mean(0), vals.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))


def smooth(y, k=5):
    y = np.asarray(y, dtype=float)
    return np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y


def plot(study: str, arms: dict[str, list[dict]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = PRIMARY.get(study.removesuffix("_smollm2"), (None, True))[0]
    fig, axes = plt.subplots(1, 5, figsize=(23, 4))
    for arm, runs in arms.items():
        c = COLORS.get(arm, "k")
        n = len(runs)
        for ax, get in ((axes[0], lambda e: e["phi"]), (axes[1], lambda e: e["phi_batches"]),
                        (axes[2], lambda e: e["readable"].get(key, np.nan))):
            x, m, s = curve(runs, get)
            ax.plot(x, m, color=c, marker="o", label=f"{arm} ({n} seed{'s' * (n > 1)})")
            ax.fill_between(x, m - s, m + s, color=c, alpha=0.15)
        if arm != "control":  # the control's training-time Φ is its own, unrelated objective
            per_step = runs[0]["completions_per_step"]
            ys = [smooth([x["phi"] for x in r["log"]]) for r in runs]
            k = min(len(y) for y in ys)
            y = np.mean([v[:k] for v in ys], 0)
            axes[3].plot((np.arange(k) + (len(runs[0]["log"]) - k) + 1) * per_step, y, color=c, label=arm)
        sp = [(x["step"], x["spearman_first_order"]) for r in runs for x in r["log"]
              if x["spearman_first_order"] is not None]
        if sp:
            axes[4].scatter(*zip(*sp), color=c, s=12, label=arm)
    axes[0].set_title(f"{study}: Φ after fresh SFT on {arms[next(iter(arms))][0]['eval_n']} samples\n"
                      "(end to end, common AdamW SFT; mean ± std over seeds)", fontsize=9)
    axes[1].set_title("the same samples, SFT on each GRPO-batch-sized slice\n(the inner SFT the rewards were for; mean)",
                      fontsize=9)
    axes[2].set_title(f"readable proxy: {key} (end to end)", fontsize=9)
    axes[3].set_title("training-time Φ (each arm's own inner SFT on the step's batch;\nmoving average of 5 steps)",
                      fontsize=9)
    axes[4].set_title("Spearman(first-order rewards, exact metagradients)\non the same batch (DPG arms)", fontsize=9)
    axes[4].axhline(0, color="gray", lw=0.5)
    for ax, xl in zip(axes, ["GRPO step", "GRPO step", "GRPO step", "examples seen", "GRPO step"]):
        ax.set_xlabel(xl)
    axes[0].legend(fontsize=7)
    if axes[4].collections:
        axes[4].legend(fontsize=7)
    fig.tight_layout()
    paths = [_save(fig, out / f"{study}.png")]
    plt.close(fig)
    if "picture" in next(iter(arms.values()))[0]["evals"][0]["readable"]:
        paths.append(pictures(study, arms, out / f"{study}_pictures.png"))
    return paths


def pictures(study: str, arms: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    from dpg import objectives
    import yaml

    cfg = yaml.safe_load((ROOT / "configs/studies" / f"{study}.yaml").read_text())
    obj = cfg["objective"]
    target = objectives.weights.load_pattern(obj.get("pattern", "67"), obj.get("text"),
                                             obj.get("error_correction", "M"))
    rows = {arm: next((r for r in runs if r["seed"] == 0), runs[0]) for arm, runs in arms.items()}
    cols = max(len(r["evals"]) for r in rows.values())
    fig, axes = plt.subplots(len(rows), cols + 1, figsize=(1.7 * (cols + 1), 1.8 * len(rows)), squeeze=False)
    for i, (arm, r) in enumerate(rows.items()):
        axes[i, 0].imshow(target, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axes[i, 0].set_title("target S", fontsize=7)
        axes[i, 0].set_ylabel(arm, fontsize=8)
        for j, e in enumerate(r["evals"]):
            axes[i, j + 1].imshow(np.array(e["readable"]["picture"]), cmap="gray", vmin=-1, vmax=1,
                                  interpolation="nearest")
            axes[i, j + 1].set_title(f"step {e['step']}: acc {e['readable']['pixel_accuracy']:.2f}", fontsize=7)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{study}: decoded sign(Δ) after a fresh SFT on {r['eval_n']} samples of each checkpoint (seed "
                 f"{r['seed']}; gray = unchanged)", fontsize=9)
    fig.tight_layout()
    p = _save(fig, path)
    plt.close(fig)
    return p


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")  # per process: two runs may report a study at once
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)
    return path


def report(study: str, runs_dir: Path, out: Path) -> dict:
    arms = load_runs(runs_dir)
    if not arms:
        print(f"{study}: no finished runs in {runs_dir}")
        return {}
    summary = {arm: summarize(study, runs)
               | {"e2e_vs_naive": paired_to_naive(runs, arms.get("naive")) if arm != "naive" else None}
               for arm, runs in arms.items()}
    out.mkdir(parents=True, exist_ok=True)
    compact = {arm: [{k: v for k, v in r.items() if k != "log"} | {"log": [
        {k: x[k] for k in ("step", "phi", "spearman_first_order")} for x in r["log"]]} for r in runs]
        for arm, runs in arms.items()}
    # the summary indented, each run on one line (pictures would otherwise take a line per pixel)
    runs = ",\n".join(f"  {json.dumps(arm)}: [\n" + ",\n".join(f"   {json.dumps(r)}" for r in rs) + "]"
                      for arm, rs in compact.items())
    tmp = out / f"{study}.json.{os.getpid()}.tmp"
    tmp.write_text(f'{{"study": {json.dumps(study)},\n "summary": {json.dumps(summary, indent=1)},\n'
                   f' "runs": {{\n{runs}}}}}\n')
    os.replace(tmp, out / f"{study}.json")
    paths = plot(study, arms, out)
    print(table(study, summary))
    print("wrote", out / f"{study}.json", *paths)
    return summary


def restore(docs: Path, runs: Path) -> int:
    """Write back the result.json of every run a committed report holds (docs/.../POINT/STUDY.json) and runs/ lacks.
    runs/ is not committed, so on a fresh checkout this is what lets a batch resume and a report keep its finished
    seeds. The report keeps each run whole except its log, cut to the keys the report reads (step, Φ, Spearman)."""
    written = 0
    for point in sorted({f.parent for f in docs.rglob("*.json")}):
        for study, d in reports(point).items():
            for arm, rs in d["runs"].items():
                for r in rs:
                    target = runs / point.relative_to(docs) / study / arm / f"seed{r['seed']}" / "result.json"
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_text(json.dumps(r, indent=1))
                        written += 1
    return written


def overview(studies: dict[str, dict], key: str = "e2e_phi_delta") -> str:
    """One row per arm, one column per study (`reports(docs)`): end-to-end ΔΦ (final − initial generator), mean ±
    std over seeds (key="e2e_batch_phi_delta": the same with SFT on GRPO-batch-sized slices; "e2e_vs_naive": ΔΦ
    minus naive's, paired by seed, mean ± standard error)."""
    studies = {study: r["summary"] for study, r in studies.items()}
    arms = [a for a in COLORS if any(s.get(a, {}).get(key) for s in studies.values())]
    lines = ["| arm | " + " | ".join(studies) + " |", "|---|" + "---|" * len(studies)]
    for arm in arms:
        cells = [(f"{v['mean']:+.3f} ± {v['se']:.3f} ({v['seeds']})" if isinstance(v, dict) else
                  f"{v[0]:+.3f} ± {v[1]:.3f} ({len(s[arm]['seeds'])})") if (v := s.get(arm, {}).get(key)) else ""
                 for s in studies.values()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lead_table(studies: dict[str, dict], lead: str = "dpg_adamw") -> str:
    """One row per other arm, one column per study (`reports(docs)`): LEAD's end-to-end ΔΦ minus the arm's, paired
    by seed, mean ± standard error (seeds): how far LEAD is ahead of each arm, judged like the goal's comparison
    to naive."""
    studies = {name: seed_deltas(r) for name, r in studies.items()}
    arms = [a for a in COLORS if a != lead and any(a in d for d in studies.values())]
    lines = [f"| {lead} − arm | " + " | ".join(studies) + " |", "|---|" + "---|" * len(studies)]
    for arm in arms:
        cells = [cell(differences(d[lead], d[arm])) if arm in d and lead in d else "" for d in studies.values()]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_deltas(report: dict) -> dict[str, dict[int, float]]:
    """Per arm and seed, end-to-end ΔΦ from a report's runs (docs/.../STUDY.json)."""
    return {arm: seed_delta(runs) for arm, runs in report["runs"].items()}


def vs_naive(deltas: dict[str, dict[int, float]], arm: str) -> list[float]:
    """ARM's ΔΦ minus naive's, seed by seed (the seeds both finished)."""
    return differences(deltas[arm], deltas.get("naive", {}))


def reports(docs: Path) -> dict[str, dict]:
    """The study reports in `docs` by study name; other JSON files there (no "summary") are not studies."""
    return {f.stem: d for f in sorted(docs.glob("*.json")) if "summary" in (d := json.loads(f.read_text()))}


def paired_figure(studies: dict[str, dict], docs: Path) -> Path:
    """overview.png in `docs`: per study (`reports(docs)`), every seed's ΔΦ − naive's per arm (dots) and their mean
    ± 2 standard errors (the paper-regime goal is judged by this bar: clear of zero)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = {name: seed_deltas(r) for name, r in studies.items()}
    fig, axes = plt.subplots(1, len(studies), figsize=(3.2 * len(studies), 3.6), squeeze=False)
    for ax, (study, deltas) in zip(axes[0], studies.items()):
        arms = [a for a in COLORS if a in deltas and a != "naive" and vs_naive(deltas, a)]
        for i, arm in enumerate(arms):
            d = vs_naive(deltas, arm)
            m, se = stats.mean_se(d)
            ax.scatter([i] * len(d), d, color=COLORS[arm], s=14, alpha=0.6)
            ax.errorbar(i + 0.2, m, yerr=2 * se if len(d) > 1 else None, color=COLORS[arm], marker="_", ms=12,
                        capsize=3)
        ax.axhline(0, color="gray", lw=0.7)
        ax.set_xticks(range(len(arms)), arms, rotation=45, ha="right", fontsize=7)
        ax.set_title(study, fontsize=9)
    axes[0][0].set_ylabel("ΔΦ end to end − naive's, by seed\n(bar: mean ± 2 SE)", fontsize=8)
    fig.suptitle(f"{docs.name}: each arm against the naive reward, paired by seed", fontsize=9)
    fig.tight_layout()
    p = _save(fig, docs / "overview.png")
    plt.close(fig)
    return p


def sweep(paper: Path) -> str:
    """The batch-size sweep: for each study reported at two or more points (paper/POINT/STUDY.json, POINT = bsB_mM),
    a table of ΔΦ end to end and ΔΦ − naive's (paired by seed) per arm and point, mean ± standard error over seeds,
    and paper/sweep_STUDY.png (both against completions per GRPO step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted((d for d in paper.glob("bs*_m*") if d.is_dir()), key=lambda d: int(d.name[2:].split("_")[0]))
    by_study: dict[str, dict[str, dict]] = {}
    for point in points:
        for study, r in reports(point).items():
            by_study.setdefault(study, {})[point.name] = seed_deltas(r)
    out = []
    for study, at in by_study.items():
        if len(at) < 2:
            continue
        names = list(at)
        x = [int(n[2:].split("_")[0]) for n in names]
        arms = [a for a in COLORS if any(a in d for d in at.values())]
        lines = [f"**{study}**\n", "| arm | " + " | ".join(f"ΔΦ at {n}" for n in names) + " | "
                 + " | ".join(f"− naive's at {n}" for n in names) + " |", "|---|" + "---|" * 2 * len(names)]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for arm in arms:
            own = [list(at[n][arm].values()) if arm in at[n] else [] for n in names]
            vs = [vs_naive(at[n], arm) if arm != "naive" and arm in at[n] else [] for n in names]
            lines.append(f"| {arm} | " + " | ".join(cell(v) for v in own) + " | "
                         + " | ".join(cell(v) for v in vs) + " |")
            for ax, vals in ((axes[0], own), (axes[1], vs)):
                m, se = np.array([stats.mean_se(v) if v else (np.nan, np.nan) for v in vals]).T
                se = np.nan_to_num(se)
                if np.isfinite(m).any():
                    ax.errorbar(x, m, yerr=se, color=COLORS[arm], marker="o", capsize=3, label=arm)
        for ax, title in ((axes[0], "ΔΦ end to end (mean ± SE over seeds)"),
                          (axes[1], "ΔΦ − naive's, paired by seed (mean ± SE)")):
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [f"{b}\n({n})" for b, n in zip(x, names)], fontsize=8)
            ax.set_xlabel("completions per GRPO step (point)")
            ax.set_title(f"{study}: {title}", fontsize=9)
        axes[1].axhline(0, color="gray", lw=0.7)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        lines.append(f"\n(plot: {_save(fig, paper / f'sweep_{study}.png')})")
        plt.close(fig)
        out.append("\n".join(lines))
    return "\n\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("study", nargs="?", help="report this study's runs (runs/studies/STUDY) into docs/results")
    what.add_argument("--overview", nargs="?", const=ROOT / "docs" / "results", type=Path, metavar="DOCS",
                      help="every arm in every study of DOCS (default docs/results)")
    what.add_argument("--sweep", nargs="?", const=ROOT / "docs" / "results" / "paper", type=Path, metavar="PAPER",
                      help="the batch-size sweep over PAPER's points (default docs/results/paper)")
    what.add_argument("--restore", nargs=2, type=Path, metavar=("DOCS", "RUNS"),
                      help="write the finished runs DOCS' reports hold back into RUNS")
    args = p.parse_args(argv)
    if args.overview:
        studies = reports(args.overview)
        print(*(overview(studies, key) for key in ("e2e_phi_delta", "e2e_batch_phi_delta", "e2e_vs_naive")),
              lead_table(studies), sep="\n\n")
        if any("e2e_vs_naive" in s for r in studies.values() for s in r["summary"].values()):
            print("wrote", paired_figure(studies, args.overview))
    elif args.restore:
        docs, runs = args.restore
        print("restored", restore(docs, runs), "runs into", runs)
    elif args.sweep:
        print(sweep(args.sweep))
    else:
        report(args.study, ROOT / "runs" / "studies" / args.study, ROOT / "docs" / "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
