"""The inner learning rates of the paper-regime studies: a sweep over powers of two and a rule fixed in advance.

    python -m experiments.oneoff.lr_sweep        # writes docs/results/paper/inner_lr.json; 2.5 min on one loaded core

The paper fine-tunes its targets at powers of two × 1e-6 (5e-6 for GPT-2, 1e-6 for Llama-3.2-1B), one learning rate
per model for all of its objectives. This sweep does the same for the embedded target of the paper regime
(experiments/run.py: PAPER, the main point MAIN_POINT).

Protocol. For seeds 0, 1, 2: the study's initial generator (pretrained on the shipped corpus with that seed) writes
two samples of the main point's batch (256 completions of the built-in prompts, the study's completion length and
temperature, two fixed sampling seeds): the training sample D and a held-out sample H. For each inner optimizer and
each lr of its grid (AdamW: 2^k × 1e-6, k = 0 … 16, i.e. 1e-6 … 0.066; SGD: 2^k × 1e-3, k = 0 … 14, i.e.
1e-3 … 16), one inner SFT run of the LM-pretrained target on D with the study's inner SFT at the main point (64
examples per step → 4 steps; token-mean loss, AdamW β = (0.9, 0.95), wd 1e-4) gives fine-tuned weights, at which
we record the target's token-mean LM loss on H and on D, and Φ of all six study objectives (ΔΦ against the
untrained target). The six studies share generator, target, prompts and inner SFT and differ only in Φ, so one SFT
run per (seed, optimizer, lr) serves all of them.

The rule, fixed before any paper-regime DPG run and before this sweep was first run: **for each inner optimizer,
the lr of the grid with the lowest held-out LM loss, averaged over the three seeds; an lr at which any seed's loss or
Φ is not finite is out.** The chosen lr is used for every study and every point of the batch-size sweep.

Why this rule and not one that reads Φ. The inner SFT is the learning algorithm A that DPG differentiates through;
the paper holds it fixed per model across objectives, as an ordinary fine-tuning run. Choosing its lr by how well it
fine-tunes (held-out loss on the generator's own data) keeps it independent of every objective and of every arm, so
no arm can have been favoured by it. A rule that maximised ΔΦ would tune A towards each objective: for an objective
that the generator's own text does not improve it would pick the smallest lr of the grid (an inner run that hardly
moves the target), and for the others an lr near divergence, where Adam's updates saturate — the regime the
paper-regime studies set out to leave. The Φ curves are recorded for every study so that the reader can see where the
chosen lr sits.
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import dataclasses
import json
import math
import os
import sys
import time

import torch

from dpg import objectives
from dpg.config.schema import load_config
from dpg.engine.metagrad import MetagradEngine
from dpg.engine.sft import make_schedule, token_loss_sums
from dpg.training import assembly, sampling
from dpg.training.rewards import to_target_examples
from experiments.run import INNER_LR_FILE, MAIN_POINT, ROOT, config_path, point_overrides

STUDIES = ["sixseven", "qr_code", "l2_norm", "language", "uuid", "belief"]
GRIDS = {"adamw": [2**k * 1e-6 for k in range(17)], "sgd": [2**k * 1e-3 for k in range(15)]}
SEEDS = [0, 1, 2]
SAMPLE_SEEDS = (30_000, 40_000)  # + seed: the training and the held-out sample (the studies evaluate with 10_000)


def study_config(study: str, seed: int):
    """The study at the main point (PAPER and the point's batch) before any lr is chosen."""
    return load_config(config_path(study), [*point_overrides(MAIN_POINT), f"seed={seed}"])


def lm_loss(engine: MetagradEngine, params: dict, examples: list[list[int]]) -> float:
    """The target's token-mean next-token loss on `examples` at `params` (the inner SFT's own loss at w = 1)."""
    total, tokens = 0.0, 0
    with torch.no_grad():
        for step in make_schedule(examples, engine.cfg):
            for mb in step.microbatches:
                total += float(token_loss_sums(engine.model, params, mb).sum())
                tokens += int(mb.attention_mask[:, 1:].sum())
    return total / tokens


def sweep_seed(seed: int) -> dict:
    cfgs = {s: study_config(s, seed) for s in STUDIES}
    base = cfgs[STUDIES[0]]
    for s, c in cfgs.items():  # one SFT run serves every study only if they agree on everything but Φ
        for part in ("generator", "target", "prompts", "inner_sft", "grpo"):
            if c.to_dict()[part] != base.to_dict()[part]:
                raise SystemExit(f"{s}: its {part} differs from {STUDIES[0]}'s; sweep it on its own")
    generator, gen_tok = assembly.load_generator(base)
    target, tok = assembly.load_target(base)
    n, g = base.grpo.completions_per_step, base.grpo
    data, held_out = [to_target_examples([r["completion"] for r in sampling.sample(
        generator, gen_tok, assembly.load_prompts(base), n, g.max_completion_length, g.temperature, seed=s + seed,
        progress=False)], tok, base.inner_sft.max_length)[0] for s in SAMPLE_SEEDS]
    objs = {s: objectives.from_config(c.objective, model=target, tokenizer=tok) for s, c in cfgs.items()}
    engine = MetagradEngine(target, objs[STUDIES[0]], base.inner_sft)
    theta0 = {**engine.frozen, **engine.params0}
    with torch.no_grad():
        phi0 = {s: float(o(engine.model, theta0)) for s, o in objs.items()}
    out = {"initial": {"heldout_loss": lm_loss(engine, theta0, held_out), "train_loss": lm_loss(engine, theta0, data),
                       "phi": phi0}, "sweep": {}}
    for opt, grid in GRIDS.items():
        rows = []
        for lr in grid:
            sft = MetagradEngine(target, objs[STUDIES[0]], dataclasses.replace(base.inner_sft, optimizer=opt, lr=lr))
            theta = {**sft.frozen, **sft.train(data)}
            with torch.no_grad():
                phi = {s: float(o(sft.model, theta)) for s, o in objs.items()}
            rows.append({"lr": lr, "heldout_loss": lm_loss(sft, theta, held_out), "train_loss": lm_loss(sft, theta, data),
                         "delta_phi": {s: phi[s] - phi0[s] for s in STUDIES}})
            print(f"seed {seed} {opt} lr {lr:.3g}: held-out loss {rows[-1]['heldout_loss']:.4f}", flush=True)
        out["sweep"][opt] = rows
    return out


def finite(row: dict) -> bool:
    return all(math.isfinite(x) for x in [row["heldout_loss"], row["train_loss"], *row["delta_phi"].values()])


def choose(per_seed: list[dict]) -> tuple[dict, dict]:
    """The rule: per optimizer, the lr with the lowest held-out loss averaged over seeds, among lrs finite in every
    seed. Returns (chosen lrs, the table: per optimizer and lr the mean over seeds of every recorded number)."""
    chosen, table = {}, {}
    for opt, grid in GRIDS.items():
        rows = []
        for i, lr in enumerate(grid):
            runs = [r["sweep"][opt][i] for r in per_seed]
            ok = all(finite(r) for r in runs)
            mean = lambda xs: sum(xs) / len(xs) if ok else math.nan  # noqa: E731
            rows.append({"lr": lr, "finite": ok, "heldout_loss": mean([r["heldout_loss"] for r in runs]),
                         "train_loss": mean([r["train_loss"] for r in runs]),
                         "delta_phi": {s: mean([r["delta_phi"][s] for r in runs]) for s in STUDIES}})
        best = min((r for r in rows if r["finite"]), key=lambda r: r["heldout_loss"])
        if best["lr"] in (grid[0], grid[-1]):
            raise SystemExit(f"{opt}: the lowest held-out loss is at the edge of the grid (lr {best['lr']:g}); "
                             "widen GRIDS and rerun")
        chosen[opt], table[opt] = best["lr"], rows
    return chosen, table


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    env.set_threads()
    os.chdir(ROOT)  # configs name their data files relative to the repository root
    t0 = time.perf_counter()
    per_seed = [sweep_seed(seed) for seed in SEEDS]
    chosen, table = choose(per_seed)
    for opt, rows in table.items():
        print(f"\n{opt}: held-out loss (untrained {sum(r['initial']['heldout_loss'] for r in per_seed) / 3:.4f}) "
              f"and ΔΦ after one SFT run, mean over seeds {SEEDS}")
        print("| lr | held-out loss | train loss | " + " | ".join(STUDIES) + " |")
        for r in rows:
            mark = " **(chosen)**" if r["lr"] == chosen[opt] else ""
            print(f"| {r['lr']:.3g}{mark} | {r['heldout_loss']:.4f} | {r['train_loss']:.4f} | "
                  + " | ".join(f"{r['delta_phi'][s]:+.4f}" for s in STUDIES) + " |")
    inner = {k: v for k, v in study_config(STUDIES[0], 0).to_dict()["inner_sft"].items() if k not in ("optimizer", "lr")}
    record = {"command": "python -m experiments.oneoff.lr_sweep", "rule": " ".join(__doc__.split("**")[1].split()),
              "chosen": chosen, "seeds": SEEDS, "grids": GRIDS, "studies": STUDIES,
              "setting": {"point": MAIN_POINT, "inner_sft": inner,
                          "target_pretrain_steps": study_config(STUDIES[0], 0).target.pretrain_steps,
                          "sample_seeds": SAMPLE_SEEDS},
              "table": table, "per_seed": per_seed, "seconds": time.perf_counter() - t0}
    INNER_LR_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = INNER_LR_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, INNER_LR_FILE)
    print(f"\nchosen: {chosen}; wrote {INNER_LR_FILE} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
