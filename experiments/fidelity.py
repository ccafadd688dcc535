"""Estimator fidelity: how close is each reward's policy gradient to the true gradient ∇J of the generator?

    python -m experiments.fidelity                                  # the whole grid (cells already done are skipped)
    python -m experiments.fidelity --cell l2_norm adamw 64 4        # one cell: objective, optimizer, N, M
    python -m experiments.fidelity --report                         # table + plots from the finished cells

The generator is a softmax policy π = softmax(ψ) over a pool of K documents from the shipped corpus, so its score
function is exact: ∇_ψ log π(k) = e_k − π. A dataset D is N iid draws; inner SFT trains the embedded tiny target on D
in M steps of N/M examples; J(ψ) = E_D[Φ(A(D))]. Every estimator gives per-example rewards rᵢ, and its policy
gradient estimate from S datasets is mean_D Σᵢ rᵢ (e_{xᵢ} − π). The estimators (dpg/training/rewards.py, docs/estimators.md):
naive (rᵢ = Φ(D) minus the mean Φ of the estimate's other datasets: the baseline GRPO's batch advantages over SFT
runs give it; `naive_raw` without it), metagrad (DPG, dΦ/dwᵢ), first_order, loo (Φ(D) − Φ(D∖i)) and
leave_group_out with G groups (G ∈ {2, 4, 8, 16}). loo, leave_group_out and naive are unbiased; metagrad and
first_order are biased Taylor estimates.

Exact and cheap, because the loss weights mean multiplicity (token-mean normaliser, dpg/engine/sft.py): SFT on D equals SFT
on the distinct documents of each step weighted by their counts, dΦ/dwᵢ is the derivative with respect to the count
of (xᵢ's document, xᵢ's step), and removing example i is decrementing that count. Each dataset is run in that compact
form (inner_sft.shuffle = false; a step = the distinct documents it holds, padded with zero-weight copies), and all
removals of a dataset are one batched call (`MetagradEngine.values`).

Truth: the mean of TRUTH[M] Rao-Blackwellised samples (`rao_blackwell_sample`: the example's own document integrated
out exactly; unbiased, tested by enumeration in tests/test_fidelity.py), drawn independently of the estimators'
datasets, with its relative standard error. The large-N limit ∇_ψ Φ(A(weights N·π)) is recorded beside it with its
cosine to the truth, to show where it is (not) a valid stand-in.

Reported per estimator: the cosine of its S-dataset estimate with the truth, mean ± standard error over R repeats
(the same datasets for every estimator: paired), seconds per dataset, and "naive at equal compute" (naive given
as many datasets as metagrad's time buys). Cells are JSON files under docs/results/fidelity/cells/; a finished cell
is skipped, so an interrupted grid resumes.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import json
import math
import time
from pathlib import Path

import torch

from dpg import objectives
from dpg.engine.metagrad import MetagradEngine
from dpg.engine.sft_config import InnerSFTConfig
from dpg.stats import mean_se
from dpg.training import models
from dpg.training.rewards import random_partition, to_target_examples

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "fidelity"
OBJECTIVES = {
    "target_string": {"name": "target_string", "string": " the river"},
    "l2_norm": {"name": "l2_norm"},
    "sixseven": {"name": "weight_pattern", "pattern": "67"},
    "text_loss": {"name": "text_loss", "path": "dpg/data/languages/es.txt", "max_texts": 16, "max_length": 32},
}
# Fixed before any measurement: AdamW at the library's default lr; SGD at an lr whose first update has a norm of the
# same order on this target (token-mean gradients of norm ~1). Neither was tuned on the results.
OPTIMIZERS = {"adamw": dict(optimizer="adamw", lr=1e-3), "sgd": dict(optimizer="sgd", lr=0.1)}
NS, MS, GROUPS = [16, 64, 256, 1024], [1, 4, 16], [2, 4, 8, 16]
# Truth datasets per M: a Rao-Blackwellised sample is K runs of M steps of the whole pool, so its cost grows with M;
# at M = 16 (4.5 s a sample here) 24 samples keep a cell within minutes. Each cell records its truth's relative SE.
TRUTH = {1: 48, 4: 48, 16: 24}
ZERO = 1e-10  # an estimate below this fraction of the truth's norm is zero (exact zeros come out as ~1e-17)
K, MAX_LENGTH = 16, 16  # pool size, tokens per document (cost: every run trains on ≤ M·K documents)
ESTIMATORS = ["naive", "naive_raw", "metagrad", "first_order", "loo"] + [f"lgo{g}" for g in GROUPS]


def setup(objective: str, optimizer: str, lr: float):
    """(engine, pool of K target examples, π, score matrix e_k − π) for one cell; float64 throughout."""
    tok = models.load_tokenizer("tiny")
    target = models.load_model("tiny", role="target", tokenizer=tok, untie_lm_head=True, dtype=torch.float64, seed=1)
    obj = objectives.from_config(OBJECTIVES[objective], model=target, tokenizer=tok)
    cfg = InnerSFTConfig(optimizer=optimizer, lr=lr, max_length=MAX_LENGTH, shuffle=False, dtype="float64")
    engine = MetagradEngine(target, obj, cfg)
    pool, _ = to_target_examples(models.corpus_lines()[:K], tok, MAX_LENGTH)
    psi = torch.randn(K, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pi = torch.softmax(psi, 0)
    return engine, pool, pi, torch.eye(K, dtype=torch.float64) - pi


def compact(x: torch.Tensor, M: int, pool: list[list[int]]):
    """Dataset x (N document ids, step m = positions m·N/M …) as (items, weights, item of each position): per step
    the distinct documents with their counts, padded to the same width d with zero-weight copies."""
    steps = x.view(M, -1)
    distinct = [s.unique() for s in steps]
    d = max(len(u) for u in distinct)
    items, weights, item_of = [], [], torch.empty_like(x)
    for m, (s, u) in enumerate(zip(steps, distinct)):
        docs = u.tolist() + [u[0].item()] * (d - len(u))
        counts = [(s == k).sum().item() for k in u.tolist()] + [0] * (d - len(u))
        for pos in range(len(s)):
            item_of[m * len(s) + pos] = len(items) + u.tolist().index(s[pos].item())
        items += [pool[k] for k in docs]
        weights += counts
    return items, torch.tensor(weights, dtype=torch.float64), item_of, d


def dataset_estimates(engine, pool, x, M, score, groups, gen):
    """Per-estimator policy-gradient estimates Σᵢ rᵢ (e_{xᵢ} − π) for dataset x, and the seconds each took."""
    items, W, item_of, d = compact(x, M, pool)
    engine.cfg.microbatch_size = d  # one microbatch per step: the compact step (the schedule reads cfg per call)
    s_x = score[x]  # [N, K]
    est, secs = {}, {}
    t = time.perf_counter()
    value = engine.value(items, W)
    secs["naive"] = time.perf_counter() - t
    est["naive_raw"] = value * s_x.sum(0)  # no baseline; `naive` gets one across datasets in run_cell
    t = time.perf_counter()
    est["metagrad"] = engine.run(items, W).metagrads.double()[item_of] @ s_x
    secs["metagrad"] = time.perf_counter() - t
    t = time.perf_counter()
    est["first_order"] = engine.first_order(items, W).double()[item_of] @ s_x
    secs["first_order"] = time.perf_counter() - t
    removals = {f"lgo{g}": random_partition(len(x), g, gen) for g in groups if g <= len(x)}
    # loo: removing any copy of a (document, step) pair is the same removal, so one run per distinct pair
    removals["loo"] = [(item_of == j).nonzero().flatten().tolist() for j in W.nonzero().flatten().tolist()]
    for name, partition in removals.items():
        t = time.perf_counter()
        rows = W.repeat(len(partition), 1)
        group_of = torch.empty(len(x), dtype=torch.long)
        for g, members in enumerate(partition):
            rows[g].index_add_(0, item_of[members], torch.full((len(members),), -1.0, dtype=torch.float64))
            group_of[members] = g
        r = value - engine.values(items, rows, budget_mb=2048)[group_of]
        secs[name] = time.perf_counter() - t + secs["naive"]  # Φ(D) is part of the estimator's cost
        est[name] = r @ s_x
    secs["naive_raw"] = secs["naive"]
    return est, secs, value


def rao_blackwell_sample(engine, pool, pi, score, N, M, gen):
    """One unbiased sample of ∇J with the example's own document integrated out exactly:
        ∇J = Σᵢ E[Φ(D) ∇log π(xᵢ)] = N · E_{m, D'}[Σ_k π_k Φ(D' + k in step m) (e_k − π)],
    m a uniform step and D' the other N − 1 examples (positions within a step are exchangeable). The K runs share D'
    (common random numbers), so Φ's common part cancels in Σ_k π_k (e_k − π) = 0 and the variance is small."""
    m = torch.randint(M, (), generator=gen).item()
    counts = torch.zeros(M, len(pool), dtype=torch.float64)
    for step in range(M):
        n = N // M - (step == m)
        if n:
            counts[step] += torch.bincount(torch.multinomial(pi, n, replacement=True, generator=gen),
                                           minlength=len(pool))
    return rao_blackwell(engine, pool, pi, score, counts, m, N)


def rao_blackwell(engine, pool, pi, score, counts, m, N):
    """N · Σ_k π_k Φ(counts + document k in step m) (e_k − π), the K runs in one batched call."""
    K = len(pool)
    rows = counts.repeat(K, 1, 1)
    rows[torch.arange(K), m, torch.arange(K)] += 1
    engine.cfg.microbatch_size = K
    phis = engine.values(pool * len(counts), rows.view(K, -1), budget_mb=2048)
    return N * (pi * phis) @ score


def large_n_limit(engine, pool, pi, M, N):
    """∇_ψ Φ(A(weights N·π/M in every step)) = (N/M)·Σ_m (diag π − ππᵀ)·∂Φ/∂w_m: the deterministic limit."""
    engine.cfg.microbatch_size = len(pool)
    res = engine.run(pool * M, (N / M) * pi.repeat(M))
    jac = torch.diag(pi) - torch.outer(pi, pi)
    return (N / M) * jac @ res.metagrads.double().view(M, -1).sum(0)


def cosine(a, b) -> float:
    """cos(a, b); 0 for an estimate that is exactly zero (metagrad and first_order when every step holds one example:
    the weighted mean makes Σ_{i in step} wᵢ·dΦ/dwᵢ = 0), not the cosine of its rounding noise."""
    if a.norm() <= ZERO * b.norm():
        return 0.0
    return (a @ b / (a.norm() * b.norm())).item()


def zero_estimates(raw: dict, truth: torch.Tensor) -> list[str]:
    """Estimators whose every per-dataset estimate is zero (to rounding)."""
    return [e for e, xs in raw.items() if all(torch.tensor(x).norm() <= ZERO * truth.norm() for x in xs)]


def run_cell(objective: str, optimizer: str, N: int, M: int, truth_datasets: int, repeats: int,
             per_estimate: int, lr: float | None = None) -> dict:
    env.set_threads()
    lr = OPTIMIZERS[optimizer]["lr"] if lr is None else lr
    engine, pool, pi, score = setup(objective, optimizer, lr)
    gen = torch.Generator().manual_seed(1000 * N + M)
    draw = lambda: torch.multinomial(pi, N, replacement=True, generator=gen)  # noqa: E731
    t0 = time.perf_counter()
    truth_samples = torch.stack([rao_blackwell_sample(engine, pool, pi, score, N, M, gen)
                                 for _ in range(truth_datasets)])
    truth = truth_samples.mean(0)
    truth_se = truth_samples.std(0) / math.sqrt(truth_datasets)
    cos, secs = {e: [] for e in ESTIMATORS}, {e: [] for e in ESTIMATORS}
    naive_eq, raw = [], {e: [] for e in ESTIMATORS}
    for _ in range(repeats):
        ests, phis, score_sums = [], [], []
        for _ in range(per_estimate):
            x = draw()
            est, sec, phi = dataset_estimates(engine, pool, x, M, score, GROUPS, gen)
            ests.append(est)
            phis.append(phi)
            score_sums.append(score[x].sum(0))
            for name in sec:
                secs[name].append(sec[name])
        # naive: Φ(D) minus the mean Φ of the estimate's other datasets (unbiased; what GRPO's batch advantages over
        # SFT runs do), so the dataset-level reward is not handicapped by Φ's offset
        phis = torch.tensor(phis, dtype=torch.float64)
        baseline = (phis.sum() - phis) / (per_estimate - 1)
        for est, phi, b, s_sum in zip(ests, phis, baseline, score_sums):
            est["naive"] = (phi - b) * s_sum
        for name in ests[0]:
            cos[name].append(cosine(sum(e[name] for e in ests) / per_estimate, truth))
            raw[name] += [e[name].tolist() for e in ests]
        # naive at metagrad's compute: as many datasets as metagrad's time buys (Φ's batched over datasets)
        ratio = max(1, round(sum(secs["metagrad"]) / sum(secs["naive"])))
        naive_eq.append(cosine(naive_many(engine, pool, pi, score, N, M, per_estimate * ratio, gen), truth))
    limit = large_n_limit(engine, pool, pi, M, N)
    cell = {
        "objective": objective, "optimizer": optimizer, "N": N, "M": M, "K": K, "lr": lr,
        "truth": {"estimator": "rao_blackwell", "datasets": truth_datasets,
                  "relative_se": (truth_se.norm() / truth.norm()).item(), "norm": truth.norm().item()},
        "large_n_limit_cosine": cosine(limit, truth),
        "repeats": repeats, "datasets_per_estimate": per_estimate,
        "cosine": {e: mean_se(c) for e, c in cos.items() if c},
        "zero_estimates": zero_estimates(raw, truth),
        "seconds_per_dataset": {e: sum(s) / len(s) for e, s in secs.items() if s},
        "naive_equal_compute": {"cosine": mean_se(naive_eq), "datasets": per_estimate * ratio},
        # per-dataset estimates Σᵢ rᵢ (e_{xᵢ} − π) (naive with its across-dataset baseline) and the truth's samples:
        # enough to recompute any statistic without rerunning the cell
        "raw": {"estimates": raw, "truth_samples": truth_samples.tolist()},
        "wall_seconds": time.perf_counter() - t0,
        "command": f"python -m experiments.fidelity --cell {objective} {optimizer} {N} {M}"
                   + (f" --lr {lr}" if lr != OPTIMIZERS[optimizer]["lr"] else ""),
    }
    return cell


def naive_many(engine, pool, pi, score, N, M, n_datasets, gen):
    """The naive estimate from `n_datasets` datasets: the mean of `naive_per_dataset`."""
    return naive_per_dataset(engine, pool, pi, score, N, M, n_datasets, gen).mean(0)


def naive_per_dataset(engine, pool, pi, score, N, M, n, gen) -> torch.Tensor:
    """n per-dataset naive estimates (Φ(D) − mean Φ of the other n − 1) · Σᵢ (e_{xᵢ} − π), their Φ's in one batched
    call over the full pool per step."""
    K = len(pool)
    engine.cfg.microbatch_size = K
    xs = torch.multinomial(pi, N * n, replacement=True, generator=gen).view(n, M, N // M)
    counts = torch.zeros(n, M, K, dtype=torch.float64)
    counts.scatter_add_(2, xs, torch.ones_like(xs, dtype=torch.float64))
    phis = engine.values(pool * M, counts.view(n, M * K), budget_mb=2048)
    baseline = (phis.sum() - phis) / (n - 1)
    return (phis - baseline)[:, None] * (counts.sum(1) @ score)


def cell_path(objective, optimizer, N, M, lr=None) -> Path:
    """The grid's cells at the optimizer's fixed lr; `--lr` cells (the lr ablation) go to cells_lr/."""
    if lr is None or lr == OPTIMIZERS[optimizer]["lr"]:
        return OUT / "cells" / f"{objective}_{optimizer}_N{N}_M{M}.json"
    return OUT / "cells_lr" / f"{objective}_{optimizer}_lr{lr:g}_N{N}_M{M}.json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell", nargs=4, metavar=("OBJECTIVE", "OPTIMIZER", "N", "M"))
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES))
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    p.add_argument("--ns", nargs="+", type=int, default=NS)
    p.add_argument("--ms", nargs="+", type=int, default=MS)
    p.add_argument("--truth", type=int, help="datasets for the ground truth (default: TRUTH[M], 48 or 24 at M = 16)")
    p.add_argument("--repeats", type=int, default=4, help="independent estimates per estimator (error bars)")
    p.add_argument("--per-estimate", type=int, default=2,
                   help="datasets per estimate (≥ 2: naive's baseline is the other datasets' mean Φ)")
    p.add_argument("--report", action="store_true", help="only rebuild the table and plots")
    p.add_argument("--force", action="store_true", help="recompute cells that exist")
    p.add_argument("--lr", type=float, help="inner lr instead of the optimizer's fixed one (the lr ablation)")
    args = p.parse_args(argv)
    if args.cell:
        grid = [(args.cell[0], args.cell[1], int(args.cell[2]), int(args.cell[3]))]
    else:
        grid = [(o, opt, n, m) for o in args.objectives for opt in args.optimizers for n in args.ns for m in args.ms]
    if not args.report:
        for o, opt, n, m in grid:
            path = cell_path(o, opt, n, m, args.lr)
            if path.exists() and not args.force:
                continue
            if n % m:
                raise ValueError(f"N={n} is not a multiple of M={m}")
            if not (args.truth or m in TRUTH):
                raise SystemExit(f"--truth: no default number of truth datasets for M={m} (TRUTH has {list(TRUTH)})")
            cell = run_cell(o, opt, n, m, args.truth or TRUTH[m], args.repeats, args.per_estimate, args.lr)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cell, indent=1))
            tmp.replace(path)
            c = cell["cosine"]
            print(f"{o:14s} {opt:5s} N={n:5d} M={m:3d}  " + "  ".join(f"{e}={c[e][0]:+.2f}" for e in c)
                  + f"  naive@compute={cell['naive_equal_compute']['cosine'][0]:+.2f}  ({cell['wall_seconds']:.0f} s)",
                  flush=True)
    from experiments.fidelity_report import report  # matplotlib only for the report

    report(OUT)


if __name__ == "__main__":
    main()
