"""The replication's report (docs/protocols/replication.md): the pre-registered analysis of the committed scores
under docs/results/replication/, and the same tables in report.md, docs/results.md and the README's headline.

    python -m experiments.replication --only report

It reads only committed files (scores, sample statistics, missing.json), so a fresh checkout with no runs/ rebuilds
every table; `blocks` renders report.json alone, which is what lets a test hold the pages to the data.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from dpg import stats
from dpg.run import fsio
from experiments.judge import ROOT, load_judges
from experiments.replication_plan import (BUDGET_BYTES, DOCS, OPTIONAL, REQUIRED, SELECTION, STUDIES, plan,
                                          planned_seeds, samples_bytes)

PAGES = (ROOT / "README.md", ROOT / "docs" / "results.md")  # their replication blocks come from report.json
# The protocol's power at Holm's strictest level for the planned seeds, from the earlier batch's train-judge effects
# (upper bounds for held-out judges): quoted beside a tie.
PLANNED_POWER = {"l2_norm": "0.53", "qr_code": "≈ 1.0", "uuid": "≥ 0.99", "belief": "≥ 0.99",
                 "language": "≥ 0.99", "sixseven": "≥ 0.99"}


def load_score_files(docs: Path) -> list[dict]:
    """Every committed score file, parsed, in path order."""
    return [json.loads(f.read_text()) for f in sorted((docs / "scores").glob("*/seed*/*.json"))]


def judge_scores(files: list[dict]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(study, set, seed) -> {judge: score}."""
    return {(d["study"], d["set"], d["seed"]): {j: v["mean"] for j, v in d["judges"].items()} for d in files}


def primary_proxies(files: list[dict], primary: dict[str, str]) -> dict[tuple[str, str, int], dict[str, float]]:
    """(study, set, seed) -> {proxy: value}: the readable quantities the objective reports beside Φ (the head norm,
    the UUID's token accuracy, the picture's pixel accuracy, ...) under the study's primary judge, mean over its
    repeats."""
    return {(d["study"], d["set"], d["seed"]): {k: sum(v) / len(v) for k, v in
                                                 d["judges"][primary[d["study"]]]["proxies"].items()} for d in files}


def load_set_stats(docs: Path) -> dict[tuple[str, str, int], dict]:
    out = {}
    for f in sorted((docs / "samples").glob("*/seed*/*.json")):
        d = json.loads(f.read_text())
        out[(d["study"], d["set"], d["seed"])] = d
    return out


def compare(scores: dict, study: str, judge_name: str, a: str, b: str, analyse: bool) -> dict:
    """J(a) − J(b) of one judge, paired by seed over the seeds both sets have; with `analyse` also the paired t
    test (dpg.stats.paired) and the sign test."""
    seeds = [s for s in planned_seeds(study) if (study, a, s) in scores and (study, b, s) in scores]
    diffs = [scores[(study, a, s)][judge_name] - scores[(study, b, s)][judge_name] for s in seeds]
    out = {"judge": judge_name, "a": a, "b": b, "seeds": seeds, "differences": diffs}
    if analyse and diffs:
        d = stats.paired([scores[(study, a, s)][judge_name] for s in seeds],
                         [scores[(study, b, s)][judge_name] for s in seeds])
        out |= {k: _finite(v) for k, v in d.to_dict().items()} | {"sign_p": stats.sign_test_p(d.wins, d.losses)}
    return out


def holm_family(results: dict[str, dict], final: bool) -> None:
    """Holm's adjustment over the studies of one family, in place (only when every study is complete: the family is
    the six studies). A study with fewer than two pairs has no p; it enters Holm as p = 1."""
    if not final:
        return
    ps = [r["p"] if r.get("p") is not None else 1.0 for r in results.values()]
    for r, adjusted in zip(results.values(), stats.holm(ps)):
        r["holm_p"] = adjusted


def decide(r: dict) -> str:
    """The protocol's rule: win / loss where Holm's p < 0.05 and the mean difference is positive / negative."""
    if "mean" not in r:  # a complete study whose pairs were all lost to missing runs
        return "no pair"
    if r["holm_p"] < 0.05 and r["mean"] > 0:
        return "win"
    if r["holm_p"] < 0.05 and r["mean"] < 0:
        return "loss"
    return "tie"


def report(docs: Path = DOCS, pages: tuple[Path, ...] = ()) -> dict:
    """The pre-registered analysis from the committed files under `docs` alone: report.json, report.md, paired.png
    and gains.png there, and the same blocks in `pages` (README, docs/results.md) between their markers (`embed`).
    A study is complete when every planned (set, seed) of its required and selection arms has scores, or is listed as
    missing in missing.json ({"STUDY/SET/seedS": why}); until all six are complete the report is interim:
    incomplete studies show their per-seed differences only, and no study gets a win, tie or loss (Holm's family is
    the six studies)."""
    judges, primary = load_judges()
    score_files = load_score_files(docs)
    scores, set_stats = judge_scores(score_files), load_set_stats(docs)
    missing_file = docs / "missing.json"
    missing = json.loads(missing_file.read_text()) if missing_file.is_file() else {}
    complete = {}
    for study in STUDIES:
        cells = plan([study], stages=["judge"])
        complete[study] = all((study, c.name, c.seed) in scores and set(scores[(study, c.name, c.seed)]) >= set(judges)
                              or f"{study}/{c.name}/seed{c.seed}" in missing for c in cells)
    final = all(complete.values())

    endpoint = {}
    for study in STUDIES:
        r = compare(scores, study, primary[study], "dpg_adamw", "naive", complete[study])
        r |= {"complete": complete[study], "planned_seeds": len(planned_seeds(study))}
        if complete[study] and r["seeds"]:
            gains = [scores[(study, "naive", s)][r["judge"]] - scores[(study, "initial", s)][r["judge"]]
                     for s in r["seeds"] if (study, "initial", s) in scores]
            gain = stats.mean_se(gains)[0] if gains else None
            r |= {"naive_gain": gain, "effect_in_naive_gains": r["mean"] / gain if gain else None}
        endpoint[study] = r
    holm_family(endpoint, final)
    if final:
        for r in endpoint.values():
            r["decision"] = decide(r)

    families = {}
    for name in judges:
        families[f"dpg_adamw − naive, judge {name}"] = {
            study: compare(scores, study, name, "dpg_adamw", "naive", complete[study]) for study in STUDIES}
    for a, b in (("dpg_adamw", "select_40960"), ("dpg_adamw", "select_4096"), ("select_40960", "naive"),
                 ("select_4096", "naive")):
        families[f"{a} − {b}, primary judge"] = {
            study: compare(scores, study, primary[study], a, b, complete[study]) for study in STUDIES}
    for family in families.values():
        holm_family(family, final)
    # Descriptive, added after the protocol (its addendum says so): how far each arm's data moves the primary judge
    # beyond the initial generator's samples, which puts the selection arms between "no training" and the RL arms.
    arms = [a for a in (*REQUIRED, *SELECTION, *OPTIONAL) if any(k[1] == a for k in scores)]
    gains = {study: {a: compare(scores, study, primary[study], a, "initial", complete[study]) for a in arms}
             for study in STUDIES}

    # Descriptive, added after the protocol like the gains: the same comparison in the objective's readable units.
    by_set = primary_proxies(score_files, primary)
    proxies = {study: {name: _means([v for (st, n, _), v in by_set.items() if st == study and n == name])
                       for name in ("initial", *arms) if any(k[:2] == (study, name) for k in by_set)}
               for study in STUDIES}

    sets = [x for x in ("initial", *REQUIRED, *SELECTION, *OPTIONAL) if any(k[1] == x for k in set_stats)]
    degen, compute = {}, {}
    for study in STUDIES:
        for name in sets:
            rows = [d for (st, n, _), d in set_stats.items() if st == study and n == name]
            if rows:
                degen.setdefault(study, {})[name] = _means([r["degeneration"] for r in rows])
                if all("compute" in r for r in rows):
                    compute.setdefault(study, {})[name] = _means([r["compute"] for r in rows])
    out = {
        "interim": not final, "complete": complete, "primary_judges": primary, "missing": missing,
        "optional_arms_run": {a: n for a in OPTIONAL if (n := sum(k[1] == a for k in scores))},
        "samples_bytes": samples_bytes(docs),
        "primary": endpoint, "secondary": families, "gains": gains, "proxies": proxies, "degeneration": degen,
        "compute": compute,
    }
    fsio.make_dir(docs)
    fsio.write_text(docs / "report.json", json.dumps(out, indent=1) + "\n")
    tables = blocks(out)
    fsio.write_text(docs / "report.md", markdown(tables, judges))
    for page in pages:
        embed(page, tables)
    if scores:
        figure(scores, judges, primary, complete, docs / "paired.png")
        gains_figure(gains, primary, docs / "gains.png")
    return out


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _means(rows: list[dict]) -> dict:
    """Per key, the mean over the rows of its non-null values, and how many rows there were."""
    keys = [k for k in rows[0] if all(isinstance(r.get(k), (int, float)) or r.get(k) is None for r in rows)]
    return {k: (sum(v) / len(v) if (v := [r[k] for r in rows if r.get(k) is not None]) else None) for k in keys} | {
        "seeds": len(rows)}


def _pm(r: dict, key: str = "mean", digits: int = 4) -> str:
    se = r.get("se")
    return f"{r[key]:+z.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")  # z: no "-0.000"


def blocks(rep: dict) -> dict[str, list[str]]:
    """The report's tables as markdown lines, by name: what report.md is made of, and what README.md (the
    headline: each study's decision) and docs/results.md embed between their `<!-- replication:NAME -->` markers.
    A function of report.json alone."""
    primary = ["| study | judge | complete | pairs / planned | mean D ± SE | t | p | Holm p | decision | + / − / = "
               "| sign p | effect (naive's gains) |",
               "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for study, r in rep["primary"].items():
        n = f"{len(r['seeds'])} / {r['planned_seeds']}"
        if "mean" not in r:
            primary.append(f"| {study} | {r['judge']} | no | {n} | | | | | | | | |")
            continue
        decision = r.get("decision", "")
        if decision == "tie":
            decision = f"tie (planned power {PLANNED_POWER[study]}, an upper bound)"
        eff = r.get("effect_in_naive_gains")
        primary.append(f"| {study} | {r['judge']} | {'yes' if r['complete'] else 'no'} | {n} | {_pm(r)} | "
                       f"{_num(r['t'], '.2f')} | {_num(r['p'], '.3g')} | {_num(r.get('holm_p'), '.3g')} | "
                       f"{decision} | {r['wins']} / {r['losses']} / {r['ties']} | {r['sign_p']:.3g} | "
                       f"{_num(eff, '+.2f')} |")
    primary += ["", "Per-seed D (primary judge), seed: value", ""]
    for study, r in rep["primary"].items():
        values = ", ".join(f"{s}: {d:+.4f}" for s, d in zip(r["seeds"], r["differences"])) or "none yet"
        primary.append(f"- {study}: {values}")

    def families(names) -> list[str]:
        lines = []
        for family in names:
            lines += [f"**{family}**", "", "| study | pairs | mean ± SE | p | Holm p | + / − / = |",
                      "|---|---|---|---|---|---|"]
            for study, r in rep["secondary"][family].items():
                if "mean" in r:
                    lines.append(f"| {study} | {len(r['seeds'])} | {_pm(r)} | {_num(r['p'], '.3g')} | "
                                 f"{_num(r.get('holm_p'), '.3g')} | {r['wins']} / {r['losses']} / {r['ties']} |")
                else:
                    values = ", ".join(f"{d:+.4f}" for d in r["differences"]) or "none yet"
                    lines.append(f"| {study} | {len(r['seeds'])} | per seed: {values} | | | |")
            lines.append("")
        return lines[:-1]

    # An optional arm may have run for fewer seeds than the study has: its entries say how many.
    def fewer(n: int, study: str) -> str:
        return f" ({n} seed{'s' * (n != 1)})" if n < rep["primary"][study]["planned_seeds"] else ""

    arms = list(next(iter(rep["gains"].values()), {}))
    gains = ["| study | judge | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for study, by_arm in rep["gains"].items():
        gains.append(f"| {study} | {rep['primary_judges'][study]} | " + " | ".join(
            _pm(r) + fewer(len(r["seeds"]), study) if "mean" in r else "" for r in by_arm.values()) + " |")
    sets = ["initial", *arms]
    proxies = ["| study | judge | proxy | seeds | " + " | ".join(sets) + " |", "|---|---|---|---|" + "---|" * len(sets)]
    for study, by_set in rep["proxies"].items():
        for proxy in (k for k in next(iter(by_set.values()), {}) if k != "seeds"):
            cells = [_num(by_set[s][proxy], ".5g") + fewer(by_set[s]["seeds"], study) if s in by_set else ""
                     for s in sets]
            proxies.append(f"| {study} | {rep['primary_judges'][study]} | {proxy} | "
                           f"{rep['primary'][study]['planned_seeds']} | " + " | ".join(cells) + " |")
    by_judge = [f for f in rep["secondary"] if f.startswith("dpg_adamw − naive, judge ")]
    selection = [f for f in rep["secondary"] if f not in by_judge]
    degeneration = ["| study | set | seeds | distinct-2 | empty | most common completion | mean words |",
                    "|---|---|---|---|---|---|---|"]
    for study, by_set in rep["degeneration"].items():
        for name, d in by_set.items():
            degeneration.append(f"| {study} | {name} | {d['seeds']} | {_num(d['distinct_2'], '.3f')} | "
                                f"{d['empty']:.3f} | {d['most_common']:.3f} | {d['mean_words']:.2f} |")
    compute = ["| study | arm | seeds | examples sampled | SFT runs | with a metagradient | policy updates "
               "| wall time (s) |",
               "|---|---|---|---|---|---|---|---|"]
    for study, by_arm in rep["compute"].items():
        for name, c in by_arm.items():
            compute.append(f"| {study} | {name} | {c['seeds']} | {c['examples_sampled']:.0f} | {c['sft_runs']:.0f} | "
                           f"{c['sft_runs_with_metagradient']:.0f} | {c['policy_updates']:.0f} | "
                           f"{c['wall_seconds']:.0f} |")
    planned = sum(r["planned_seeds"] for r in rep["primary"].values())
    optional = ", ".join(f"{a} ({n} of {planned} (study, seed) pairs judged)"
                         for a, n in rep["optional_arms_run"].items()) or "none"
    status = ("**Interim.** Not every planned cell is complete, so no study is given a win, tie or loss (Holm's "
              "family is the six studies); incomplete studies show their per-seed differences only."
              if rep["interim"] else "**Final.** Every planned cell of every study is complete (or listed as missing).")
    pairs = sum(len(r["seeds"]) for r in rep["primary"].values())
    if rep["interim"]:
        headline = (f"*Interim*: {pairs} of {planned} planned (study, seed) pairs are complete; until every one is, "
                    "the protocol gives no study a win, tie or loss.")
    else:
        headline = "; ".join(
            f"**{study}: {r['decision']}**" + (f" ({r['mean']:+.3g} ± {r['se']:.2g}, {len(r['seeds'])} seeds)"
                                                if "mean" in r else "")
            for study, r in rep["primary"].items()) + "."
    return {"status": [status], "headline": [headline], "primary": primary, "judges": families(by_judge),
            "selection": families(selection), "gains": gains, "proxies": proxies, "degeneration": degeneration,
            "compute": compute,
            "budget": [f"Optional arms run: {optional}. Committed samples: {rep['samples_bytes'] / 1e6:.2f} MB of the "
                       f"{BUDGET_BYTES / 1e6:.0f} MB budget. Missing cells: {rep['missing'] or 'none'}."]}


def markdown(b: dict[str, list[str]], judges: dict) -> str:
    """report.md: the blocks (`blocks`) with their headings and what each table means."""
    lines = ["# The held-out-judge replication: report", "",
             "Pre-registered in docs/protocols/replication.md; rebuilt from the committed samples and scores by "
             "`python -m experiments.replication --only report`.", "", *b["status"], "",
             "## Primary endpoint: D = J(dpg_adamw) − J(naive), paired by seed", "",
             "J is the study's primary judge; p from the two-sided paired t test over seeds, Holm-adjusted over the "
             "six studies; the sign test is exact and two-sided; the effect is mean D ÷ the mean over seeds of "
             "J(naive) − J(initial).", "", *b["primary"], "",
             "## Secondary comparisons (reported, no headline claim)", "",
             "Each family is Holm-corrected over the six studies on its own. The family of a judge holds that "
             "judge's dpg_adamw − naive in every study; where the judge is the study's primary one, the entry "
             "repeats the primary endpoint. Held-out-target judges on sixseven and qr_code measure transfer.", "",
             *b["judges"], "", *b["selection"], "",
             "## Gain over the initial generator's samples (primary judge; descriptive, not tested)", "",
             "J(arm) − J(initial) under the study's primary judge, mean ± SE over seeds, paired by seed; shown for "
             "complete studies. Added after the protocol (its addendum says so).", "", *b["gains"], "",
             "![each arm's gain over the initial generator's samples, by seed](gains.png)", "",
             "The same sets in the objective's readable units: each proxy it reports beside Φ under the primary "
             "judge, mean over repeats and seeds (descriptive, added with the gains).", "", *b["proxies"], "",
             "## Degeneration of the sample sets (mean over seeds; reported, not tested)", "", *b["degeneration"], "",
             "## Compute per run (mean over seeds)", "", *b["compute"], "", *b["budget"], "",
             "Judges: " + "; ".join(f"`{j.name}` ({j.role})" for j in judges.values()) + ".",
             "", "![every seed's paired difference per study and judge](paired.png)", ""]
    return "\n".join(lines)


MARKER = re.compile(r"(<!-- replication:(\w+) -->\n)(.*?)(<!-- /replication:\2 -->)", re.S)


def embed(page: Path, tables: dict[str, list[str]]) -> None:
    """Writes each named block between its `<!-- replication:NAME -->` and `<!-- /replication:NAME -->` markers in
    `page` (a blank line either side, so the markdown around it renders as tables). A marker without its end, or a
    name that is not a block, is an error naming it: a page whose tables could go stale must not pass silently."""
    text = page.read_text()
    opened = re.findall(r"<!-- replication:(\w+) -->", text)
    closed = set(re.findall(r"<!-- /replication:(\w+) -->", text))
    for name in opened:
        if name not in tables:
            raise ValueError(f"{page}: <!-- replication:{name} --> names no report block (known: {sorted(tables)})")
        if name not in closed:
            raise ValueError(f"{page}: <!-- replication:{name} --> has no <!-- /replication:{name} --> after it")
    fsio.write_text(page, MARKER.sub(lambda m: m.group(1) + "\n" + "\n".join(tables[m.group(2)]) + "\n\n" + m.group(4),
                                     text))


def _num(v, spec: str) -> str:
    return "" if v is None else f"{v:{spec}}"


def figure(scores: dict, judges: dict, primary: dict, complete: dict, path: Path) -> Path:
    """Per study, every seed's J(dpg_adamw) − J(naive) under each judge (dots), the primary judge in colour; for a
    complete study also the mean ± 2 SE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(judges)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    for ax, study in zip(axes.flat, STUDIES):
        pairs = 0
        for i, name in enumerate(names):
            d = compare(scores, study, name, "dpg_adamw", "naive", False)["differences"]
            pairs = max(pairs, len(d))
            color = "C3" if name == primary[study] else "C0"
            ax.scatter([i] * len(d), d, color=color, s=14, alpha=0.6)
            if complete[study] and len(d) > 1:
                m, se = stats.mean_se(d)
                ax.errorbar(i + 0.25, m, yerr=2 * se, color=color, marker="_", ms=12, capsize=3)
        ax.axhline(0, color="gray", lw=0.7)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
        state = "complete" if complete[study] else "interim"
        ax.set_title(f"{study} ({pairs} of {len(planned_seeds(study))} seeds, {state}; red: primary)", fontsize=9)
    axes[0][0].set_ylabel("J(dpg_adamw) − J(naive), by seed\n(bar: mean ± 2 SE, complete studies)", fontsize=8)
    return _save(fig, path)


def gains_figure(gains: dict, primary: dict, path: Path) -> Path:
    """Per complete study, each arm's J(arm) − J(initial) under the primary judge: every seed (dots) and the mean ±
    2 SE (bar), so that where selection falls between no training (0) and the RL arms is seen at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), squeeze=False)
    for ax, study in zip(axes.flat, STUDIES):
        arms = [(a, r) for a, r in gains[study].items() if "mean" in r]
        for i, (arm, r) in enumerate(arms):
            ax.bar(i, r["mean"], yerr=2 * (r.get("se") or 0), color=f"C{i}", alpha=0.5, capsize=3)
            ax.scatter([i] * len(r["differences"]), r["differences"], color=f"C{i}", s=10)
        ax.axhline(0, color="gray", lw=0.7)
        ax.set_xticks(range(len(arms)), [f"{a}\n({len(r['seeds'])} seeds)" for a, r in arms], fontsize=7)
        ax.set_title(f"{study}: J(arm) − J(initial), judge {primary[study]}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Written under a temporary name and moved into place, so a reader never sees half a figure."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path
