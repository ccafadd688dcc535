"""How much of the per-batch fidelity gap survives averaging over many batches?

    python -m experiments.fidelity_horizon                          # the N = 256, M = 4 cells (the studies' point)
    python -m experiments.fidelity_horizon --cell l2_norm adamw 256 4

The fidelity benchmark (experiments/fidelity.py) scores one estimate from 2 datasets. A GRPO run sums an update per
step over many steps, so what matters end to end is closer to the cosine of the *average of k datasets' estimates*
with the truth. For an estimator whose per-dataset estimate g has mean μ and total variance V,

    cos_k = μ·t / (|t| · sqrt(|μ|² + V/k))  →  cos(μ, t)  as k → ∞,

so an unbiased estimator (naive, loo) tends to 1 however noisy it is, and a biased one (metagrad, a Taylor estimate)
to its bias cosine cos(μ, t) < 1. The measurement, on the fidelity benchmark's softmax policy (its setup, pool and
truth; the policy held fixed, as if GRPO's steps all saw the same generator):
- `metagrad`: D_MG datasets of N, one per GRPO step of a DPG arm (cross-group batching: one SFT run of M steps);
- `naive` (same SFT): D_NAIVE datasets of N, M steps, each baselined by the mean Φ of all the others;
- `naive, as the study runs it`: per GRPO step G_INV inverse-group SFT runs of N / G_INV examples in one step each
  (the studies' naive arm), judged against the same truth (the objective J of N examples in M steps);
- k datasets (GRPO steps) = disjoint chunks of those per-dataset estimates: cosine mean ± SE over chunks;
- the model curve above from the per-dataset mean and variance (unbiased: |μ|² − V/n, |t|² − V_t/n_t), its limit
  (the bias cosine), and the k at which naive's curve reaches metagrad's.
The truth is the cell's stored Rao-Blackwellised samples plus TRUTH_MORE fresh ones. Writes
docs/results/fidelity/horizon/CELL.json, horizon.md and horizon.png; a finished cell is skipped.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import json
import math
import time
from pathlib import Path

import torch

from dpg.stats import mean_se
from experiments import fidelity as F  # the benchmark's setup, estimators and truth: one definition

OUT = F.OUT / "horizon"
D_MG, D_NAIVE, G_INV, TRUTH_MORE = 128, 1024, 4, 48
KS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 1024]
CELLS = [(o, opt, 256, 4) for o in F.OBJECTIVES for opt in F.OPTIMIZERS]


def chunk_cosines(per_dataset: torch.Tensor, truth: torch.Tensor, k: int, per_step: int = 1):
    """cos(mean of k steps' estimates, truth), mean ± SE over the disjoint chunks (per_step datasets a step)."""
    n = len(per_dataset) // (k * per_step)
    if n == 0:
        return None
    cs = [F.cosine(c.mean(0), truth) for c in per_dataset[: n * k * per_step].view(n, k * per_step, -1)]
    return mean_se(cs)


def model(per_dataset: torch.Tensor, truth_samples: torch.Tensor, per_step: int = 1) -> dict:
    """Unbiased moment estimates (μ·t, |μ|², V, |t|²) of one GRPO step's estimate, its limit cos(μ, t) and its curve."""
    g = per_dataset.view(-1, per_step, per_dataset.shape[-1]).mean(1)  # one GRPO step's estimate
    mu, V = g.mean(0), g.var(0).sum()
    t, Vt = truth_samples.mean(0), truth_samples.var(0).sum()
    m = {"dot": (mu @ t).item(), "mu2": (mu @ mu - V / len(g)).item(), "V": V.item(),
         "t2": (t @ t - Vt / len(truth_samples)).item()}
    m["limit"] = m["dot"] / math.sqrt(m["mu2"] * m["t2"]) if m["mu2"] > 0 and m["t2"] > 0 else math.nan
    m["curve"] = {k: cos_k(m, k) for k in KS}
    return m


def cos_k(m: dict, k: float) -> float:
    """The curve cos_k = μ·t / (|t| sqrt(|μ|² + V/k)) at k GRPO steps, from `model`'s moments."""
    return m["dot"] / math.sqrt(max(m["t2"], 1e-300) * (max(m["mu2"], 0) + m["V"] / k))


def run_cell(objective: str, optimizer: str, N: int, M: int) -> dict:
    env.set_threads()
    stored = json.loads(F.cell_path(objective, optimizer, N, M).read_text())
    engine, pool, pi, score = F.setup(objective, optimizer, F.OPTIMIZERS[optimizer]["lr"])
    gen = torch.Generator().manual_seed(7_000_000 + 1000 * N + M)  # fresh draws, not the cell's
    t0 = time.perf_counter()
    more = [F.rao_blackwell_sample(engine, pool, pi, score, N, M, gen) for _ in range(TRUTH_MORE)]
    truth_samples = torch.cat([torch.tensor(stored["raw"]["truth_samples"], dtype=torch.float64), torch.stack(more)])
    truth = truth_samples.mean(0)
    secs = {"truth": time.perf_counter() - t0}

    t0 = time.perf_counter()
    mg = []
    for _ in range(D_MG):
        x = torch.multinomial(pi, N, replacement=True, generator=gen)
        items, W, item_of, d = F.compact(x, M, pool)
        engine.cfg.microbatch_size = d
        mg.append(engine.run(items, W).metagrads.double()[item_of] @ score[x])
    secs["metagrad"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = F.naive_per_dataset(engine, pool, pi, score, N, M, D_NAIVE, gen)
    study = F.naive_per_dataset(engine, pool, pi, score, N // G_INV, 1, D_NAIVE, gen)
    secs["naive"] = time.perf_counter() - t0
    per = {"metagrad": (torch.stack(mg), 1), "naive": (naive, 1), "naive_as_study": (study, G_INV)}
    cell = {"objective": objective, "optimizer": optimizer, "N": N, "M": M,
            "truth": {"datasets": len(truth_samples),
                      "relative_se": (truth_samples.std(0).norm() / math.sqrt(len(truth_samples)) / truth.norm()).item()},
            "datasets": {"metagrad": D_MG, "naive": D_NAIVE, "naive_as_study": D_NAIVE},
            "measured": {e: {k: cs for k in KS if (cs := chunk_cosines(g, truth, k, s))} for e, (g, s) in per.items()},
            "model": {e: model(g, truth_samples, s) for e, (g, s) in per.items()},
            "seconds": secs, "command": f"python -m experiments.fidelity_horizon --cell {objective} {optimizer} {N} {M}"}
    cell["crossing"] = {e: crossing(cell["model"][e], cell["model"]["metagrad"]) for e in ("naive", "naive_as_study")}
    return cell


def crossing(naive: dict, mg: dict) -> float:
    """The number of steps k at which naive's model curve reaches metagrad's (inf: never, with both limits known;
    nan: a limit not resolved). Solved from μ·t/sqrt(|μ|² + V/k) ratios: cos_naive(k) = cos_mg(k)."""
    a_n, a_m = naive["dot"] ** 2 / naive["t2"], mg["dot"] ** 2 / mg["t2"]  # cos² = a / (|μ|² + V/k)
    if naive["dot"] <= 0 or mg["dot"] <= 0 or naive["mu2"] <= 0 or mg["mu2"] <= 0:
        return math.nan
    # a_n (m_m + V_m/k) = a_m (m_n + V_n/k)  ->  k = (a_m V_n − a_n V_m) / (a_n m_m − a_m m_n)
    den = a_n * mg["mu2"] - a_m * naive["mu2"]
    num = a_m * naive["V"] - a_n * mg["V"]
    if den <= 0:
        return math.inf if num > 0 else 0.0
    return max(num / den, 0.0)


def report() -> None:
    cells = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    lines = ["| cell | truth rel. SE | estimator | k = 1 | 4 | 16 | 64 | 160 (model) | limit k → ∞ | naive reaches metagrad at k |",
             "|" + "---|" * 10]
    for c in cells:
        name = f"{c['objective']} {c['optimizer']} N={c['N']} M={c['M']}"
        for e in ("metagrad", "naive", "naive_as_study"):
            m, meas = c["model"][e], c["measured"][e]
            cos = lambda k: (f"{meas[str(k)][0]:+.2f}" + (f" ± {meas[str(k)][1]:.2f}" if not math.isnan(meas[str(k)][1]) else "")  # noqa: E731
                             if str(k) in meas else "–")
            cross = c["crossing"].get(e)
            lines.append(f"| {name} | {c['truth']['relative_se']:.2f} | {e} | {cos(1)} | {cos(4)} | {cos(16)} | {cos(64)} | "
                         f"{cos_k(m, 160):+.2f} | {m['limit']:+.2f} | " + ("" if cross is None else f"{cross:.0f}") + " |")
    (OUT.parent / "horizon.md").write_text(
        f"{len(cells)} cells; `python -m experiments.fidelity_horizon` (module docstring: the protocol). Measured "
        "cosines: mean ± SE over disjoint chunks of k GRPO steps' estimates; 160 and ∞: the moment model.\n\n"
        + "\n".join(lines) + "\n")
    plot(cells, OUT.parent / "horizon.png")
    print(f"{len(cells)} cells -> {OUT.parent / 'horizon.md'}, {OUT.parent / 'horizon.png'}")


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = (len(cells) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    colors = {"metagrad": "C0", "naive": "C2", "naive_as_study": "C8"}
    for ax, c in zip(axes.flat, cells):
        for e, col in colors.items():
            ks = [int(k) for k in c["measured"][e]]
            ys, ses = zip(*c["measured"][e].values())
            ax.errorbar(ks, ys, yerr=[0 if math.isnan(s) else s for s in ses], color=col, marker=".", ls="none",
                        capsize=2, label=f"{e} (measured)")
            curve = c["model"][e]["curve"]
            ax.plot([int(k) for k in curve], list(curve.values()), color=col, lw=1, label=f"{e} (model)")
        ax.axvline(160, color="0.6", lw=0.8, ls=":")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.2, 1.05)
        ax.set_title(f"{c['objective']}, inner {c['optimizer']} (truth rel. SE {c['truth']['relative_se']:.2f})", fontsize=9)
        ax.set_xlabel("k GRPO steps averaged (policy fixed)")
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("cosine to true ∇J")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", nargs=4, metavar=("OBJECTIVE", "OPTIMIZER", "N", "M"))
    p.add_argument("--report", action="store_true", help="only rebuild horizon.md and horizon.png")
    args = p.parse_args(argv)
    grid = [(args.cell[0], args.cell[1], int(args.cell[2]), int(args.cell[3]))] if args.cell else CELLS
    if not args.report:
        for o, opt, n, m in grid:
            path = OUT / f"{o}_{opt}_N{n}_M{m}.json"
            if path.exists():
                continue
            cell = run_cell(o, opt, n, m)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps(cell, indent=1))
            path.with_suffix(".tmp").replace(path)
            print(f"{path.name}: limits " + ", ".join(f"{e} {v['limit']:+.2f}" for e, v in cell["model"].items())
                  + f" ({sum(cell['seconds'].values()):.0f} s)", flush=True)
    report()


if __name__ == "__main__":
    main()
