"""The paper's studies at CPU scale: every arm x seed, trained with `dpg.training.trainer.train`, then checked end to end.

    python -m experiments.run STUDY [--arms dpg_adamw naive ...] [--seeds 0 1 2] [--steps 40] [--eval-n 64]
    python -m experiments.run STUDY --report          # only rebuild docs/results/STUDY.{json,png} from finished runs
    python -m experiments.run STUDY --point bs256_m4  # the paper regime (below) at one point of the batch-size sweep

STUDY is a config in configs/studies/ (l2_norm, sixseven, qr_code, language, uuid, belief, *_smollm2). An arm is a
list of `key=value` overrides of that config (ARMS below). For each arm x seed:

1. train: `dpg.training.trainer.train(cfg)` into runs/studies/STUDY/ARM/seedS/ (resumed from its last checkpoint if a previous
   invocation was killed; skipped if `result.json` exists, so rerunning the command only fills in what is missing);
2. end to end, what `dpg evaluate` does: sample `--eval-n` completions from the initial generator and from every
   checkpoint (and the final one), SFT a fresh target on each sample, and record Φ, the objective's proxies and a
   readable proxy (`readable` below) against GRPO step and examples seen; also `phi_batches`, the mean Φ after SFT
   on each training-sized slice (one GRPO batch) of the same samples, i.e. under the inner SFT the rewards were
   computed for. All arms are evaluated with the study config's inner SFT (AdamW), so their numbers are comparable;
   the SGD arm is also evaluated with its own SGD;
3. write result.json (evaluations, the training log's curves, wall time).

Then it aggregates every finished run of the study into docs/results/STUDY.json and plots docs/results/STUDY.png
(and STUDY_pictures.png for the weight-pattern studies) with experiments/plots.py.

The paper regime (docs/results_archive.md, "Protocol for the paper-regime studies"): `--point NAME` adds PAPER to the study
config (the LM-pretrained target, 64 examples per inner optimizer step, the inner learning rates that
experiments/oneoff/lr_sweep.py chose by its rule, docs/results/paper/inner_lr.json) and the point's batch: NAME =
bsB_mM is B completions per GRPO step in M inner steps, at TOTAL_EXAMPLES examples seen whatever B (the paper's
batch-size sweep, at CPU scale). Runs go to runs/paper/NAME/STUDY/ARM/seedS/, the report to docs/results/paper/NAME/STUDY.json.
Without --point: the 40-step studies of docs/results_archive.md as they were run (random-init target, 16 completions).
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import difflib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from dpg.config.schema import load_config
from dpg.run import checkpoints as run_checkpoints
from dpg.run.checkpoints import LOG_FILE, read_log
from dpg.training import assembly, models, sampling, trainer
from dpg.training.rewards import to_target_examples
from experiments import plots

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "studies"
DOCS = ROOT / "docs" / "results"
SGD_LR = 1.0  # calibrated once: moves Φ about as much as AdamW at lr 1e-2 on 16 corpus lines (docs/results_archive.md)

ARMS = {
    "dpg_adamw": [],  # the study config as written: exact metagradients through AdamW inner SFT
    "dpg_sgd": ["inner_sft.optimizer=sgd"],  # its lr: SGD_LR, or the paper regime's swept one (arm_overrides)
    "naive": ["reward.estimator=naive", "reward.batching=inverse_groups", "reward.advantages=batch",
              "reward.compare_every=0"],
    "first_order": ["reward.estimator=first_order", "reward.compare_every=0"],
    # unbiased removal estimators (docs/estimators.md): N + 1 and G + 1 SFT runs per reward call
    "loo": ["reward.estimator=loo", "reward.compare_every=0"],
    "leave_group_out": ["reward.estimator=leave_group_out", "reward.groups=16", "reward.compare_every=0"],
    # the cross-group batching ablation: DPG-AdamW with every completion of a prompt in a different SFT run
    "dpg_adamw_inverse": ["reward.batching=inverse_groups"],
    # drift control: exact DPG-AdamW for an unrelated objective (experiments/controls.py), judged by the study's Φ
    "control": ["objective={name: 'experiments.controls:RandomDirection', seed: 0}", "reward.compare_every=0"],
    # language only: heuristic rewards (dpg/training/heuristics.py), scored against the study's target-language texts
    "levenshtein": ["reward.estimator=levenshtein", "reward.compare_every=0"],
    "embedding": ["reward.estimator=embedding", "reward.compare_every=0"],
    "langid": ["reward.estimator=langid", "reward.compare_every=0"],
}
CORE_ARMS = ["dpg_adamw", "dpg_sgd", "naive", "first_order", "control"]
STUDY_ARMS = {"language": CORE_ARMS + ["levenshtein", "embedding", "langid"],
              "language_smollm2": CORE_ARMS + ["levenshtein", "embedding", "langid"]}

# -- the paper regime -------------------------------------------------------------------------------------------------
# Every point: the LM-pretrained tiny target (as the paper fine-tunes pretrained GPT-2 / Llama), INNER_BATCH examples
# per inner optimizer step (the paper's 1,024 scaled down with the 64-dim generator; its sweep is 1,024 / 8,192 /
# 98,304 rollouts per step at M = 1 / 8 / 96), GRPO micro-batches of 64 completions, and prompts cycled
# where a step needs more than the 200 built-in ones (each copy its own GRPO group).
INNER_BATCH = 64
TARGET_PRETRAIN_STEPS = 300  # as the generator's: 300 AdamW steps of 16 × 64 tokens, 7 passes over the corpus
PAPER = [f"target.pretrain_steps={TARGET_PRETRAIN_STEPS}", f"inner_sft.microbatch_size={INNER_BATCH}",
         "inner_sft.grad_accum_steps=1", "grpo.micro_batch_size=64", "prompts.repeat=true"]
POINTS = {"bs64_m1": 16, "bs256_m4": 64, "bs1024_m16": 256}  # name: prompts per step, 4 completions each
MAIN_POINT = "bs256_m4"  # the main arms of every study; the sweep's other points for sixseven and l2_norm
TOTAL_EXAMPLES = 40_960  # examples seen per run at every point: 640 / 160 / 40 GRPO steps of 64 / 256 / 1,024
INNER_LR_FILE = DOCS / "paper" / "inner_lr.json"  # written by experiments/oneoff/lr_sweep.py


def point_steps(point: str) -> int:
    return TOTAL_EXAMPLES // (4 * POINTS[point])


def point_overrides(point: str) -> list[str]:
    """The paper regime at POINT, before any arm or inner lr."""
    return [*PAPER, f"grpo.prompts_per_step={POINTS[point]}"]


def arm_overrides(arm: str, point: str | None, extra: list[str] = ()) -> list[str]:
    """ARM's overrides of the study config, with the `--set` ones (`extra`): at a paper-regime POINT with the inner lr
    that experiments/oneoff/lr_sweep.py chose for the arm's optimizer (`extra` may change the point, not the arm or
    its lr), or (None) as in the 40-step studies of docs/results_archive.md (the config's AdamW lr, SGD_LR for SGD)."""
    sgd = "inner_sft.optimizer=sgd" in ARMS[arm]
    if point is None:
        return [*extra, *ARMS[arm], *([f"inner_sft.lr={SGD_LR}"] if sgd else [])]
    if not INNER_LR_FILE.is_file():
        raise SystemExit(f"{INNER_LR_FILE} is missing: run `python -m experiments.oneoff.lr_sweep` first")
    lr = json.loads(INNER_LR_FILE.read_text())["chosen"]["sgd" if sgd else "adamw"]
    return [*point_overrides(point), *extra, *ARMS[arm], f"inner_sft.lr={lr}"]


# -- readable proxies ------------------------------------------------------------------------------------------------


def readable(study: str, cfg, objective, model, params: dict, proxies: dict, texts: list[str]) -> dict:
    """Numbers a person can read at a glance, per study: they come from the fine-tuned target and/or the samples."""
    kind = study.removesuffix("_smollm2")
    if kind == "l2_norm":
        return {"norm": proxies["norm"]}
    if kind in ("sixseven", "qr_code"):
        return {"pixel_accuracy": proxies["pixel_accuracy"],
                "picture": objective.maps(model, params)["decoded"].astype(int).tolist()}
    if kind == "uuid":
        uuid = cfg.objective["string"]
        longest = [difflib.SequenceMatcher(None, t, uuid, autojunk=False).find_longest_match().size for t in texts]
        return {"exact_match": proxies["exact_match"],  # greedy decoding of the fine-tuned target from BOS
                "uuid_in_sample": sum(uuid in t for t in texts) / len(texts),
                "uuid_longest_run": sum(longest) / len(texts)}  # mean longest run of UUID characters in a sample
    if kind == "belief":
        return {"prefers_fact": belief_preference(cfg, model, params)}
    if kind == "language":
        return language_share(cfg, texts)
    return {}


_BELIEF = {}


def belief_preference(cfg, model, params) -> float:
    """Share of held-out questions where the fine-tuned target gives the fact-consistent answer a lower loss than the
    distractor (a per-question text_loss on each)."""
    from dpg import objectives
    path = cfg.objective["path"]
    if path not in _BELIEF:
        tok = models.load_tokenizer(cfg.target.tokenizer or cfg.target.name_or_path)
        rows = [json.loads(x) for x in (ROOT / path).read_text().splitlines() if x.strip()]
        _BELIEF[path] = [tuple(objectives.get("text_loss", texts=[(r["prompt"], r[k])], tokenizer=tok)
                               for k in ("completion", "distractor")) for r in rows]
    with torch.no_grad():
        wins = [float(good(model, params)) > float(bad(model, params)) for good, bad in _BELIEF[path]]
    return sum(wins) / len(wins)


def language_share(cfg, texts: list[str]) -> dict:
    """Share of samples that the shipped langid classifier (dpg/training/heuristics.py, character n-gram naive Bayes over the
    languages in dpg/data/languages/) assigns to the objective's language (the file name, e.g. es.txt -> es), and
    the mean probability it gives that language."""
    from dpg.training import heuristics

    language, classifier = Path(cfg.objective["path"]).stem, heuristics.shipped_classifier()
    return {"language_share": sum(p == language for p in classifier.predict(texts)) / len(texts),
            "language_probability": float(heuristics.langid_rewards(texts, classifier, language).mean())}


# -- one arm x seed ---------------------------------------------------------------------------------------------------


def config_path(study: str) -> Path:
    path = ROOT / "configs" / "studies" / f"{study}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown study {study!r}: no {path}")
    return path


def default_runs(point: str | None) -> Path:
    return ROOT / "runs" / "paper" / point if point else RUNS


def runs_arg(runs: Path) -> str:
    """RUNS as a command names it: relative to the repository root where it lies below it."""
    return str(runs.resolve().relative_to(ROOT)) if runs.resolve().is_relative_to(ROOT) else str(runs)


def run_one(study: str, arm: str, seed: int, steps: int, eval_n: int, runs: Path = RUNS, extra: list[str] = (),
            point: str | None = None) -> dict:
    out = runs / study / arm / f"seed{seed}"
    result_file = out / "result.json"
    if result_file.exists():
        print(f"[{study}/{arm}/seed{seed}] done already: {result_file}", flush=True)
        return json.loads(result_file.read_text())
    # a paper point evaluates about 4 checkpoints along the run, as the 40-step studies do with save_every 10
    every = [f"checkpoint.save_every={max(1, steps // 4)}"] if point else []
    overrides = [*arm_overrides(arm, point, extra), *every, f"seed={seed}", f"grpo.steps={steps}", f"output_dir={out}"]
    cfg = load_config(config_path(study), overrides)
    print(f"[{study}/{arm}/seed{seed}] training {steps} GRPO steps", flush=True)
    t0 = time.perf_counter()
    resumed = False
    if not (out / "final").exists():
        resumed = run_checkpoints.latest(out) is not None
        if not resumed and out.exists():
            shutil.rmtree(out)  # killed before its first checkpoint: start over
        trainer.train(cfg, resume=resumed)
    train_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    base = load_config(config_path(study), [*arm_overrides("dpg_adamw", point, extra), f"seed={seed}",
                                            f"grpo.steps={steps}"])  # the common SFT
    checkpoints = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if run_checkpoints.problem(p) is None)
    points = [(0, "initial")] + [(s, p) for s, p in checkpoints if s < steps] + [(steps, out / "final")]
    evals = [evaluate(study, base, gen, step, eval_n, seed) for step, gen in points]
    own = None
    if cfg.inner_sft != base.inner_sft:  # DPG-SGD: also judged by the inner SFT it was trained for
        own = [evaluate(study, cfg, gen, step, eval_n, seed) for step, gen in (points[0], points[-1])]
    log = read_log(out / LOG_FILE)
    result = {
        "study": study, "arm": arm, "seed": seed, "steps": steps, "eval_n": eval_n,
        "command": f"python -m experiments.run {study} --arms {arm} --seeds {seed} --steps {steps} --eval-n {eval_n}"
                   + (f" --point {point}" if point else "") + "".join(f" --set {x}" for x in extra)
                   + (f" --runs-dir {runs_arg(runs)}" if runs.resolve() != default_runs(point).resolve() else ""),
        "point": point,
        "overrides": overrides, "completions_per_step": cfg.grpo.completions_per_step,
        "train_seconds": train_seconds, "resumed": resumed, "eval_seconds": time.perf_counter() - t1,
        "step_seconds": sum(r["seconds"]["total"] for r in log if "seconds" in r),
        "evals": evals, "evals_own_sft": own,
        "log": [{"step": r["step"], "phi": r.get("phi"), "proxies": r.get("proxies", {}),
                 "spearman_first_order": r.get("advantage_scaling", {}).get("first_order_spearman"),
                 "reward_std": r.get("reward", {}).get("std"), "seconds": r.get("seconds", {}).get("total")}
                for r in log],
    }
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, result_file)
    e0, e1 = evals[0], evals[-1]
    print(f"[{study}/{arm}/seed{seed}] end to end Φ {e0['phi']:.4f} -> {e1['phi']:.4f}; train {train_seconds:.0f} s, "
          f"eval {result['eval_seconds']:.0f} s", flush=True)
    return result


def evaluate(study: str, cfg, generator, step: int, n: int, seed: int) -> dict:
    """`dpg evaluate` for one generator: n samples (fixed sampling seed) -> fresh SFT of the target -> Φ, proxies."""
    engine, objective, target_tok = engine_for(cfg)
    texts = sample_texts(cfg, generator, n, seed)
    examples, truncated = to_target_examples(texts, target_tok, cfg.inner_sft.max_length)
    res = engine.evaluate(examples)
    # The same samples cut into training-sized datasets (one GRPO batch each): Φ under the SFT the rewards were for.
    k = cfg.grpo.completions_per_step
    batch_phi = [engine.evaluate(examples[i:i + k]).value for i in range(0, len(examples) - k + 1, k)]
    return {"step": step, "examples_seen": step * k, "phi": res.value,
            "phi_batches": sum(batch_phi) / len(batch_phi) if batch_phi else None,
            "proxies": res.proxies, "readable": readable(study, cfg, objective, engine.model, res.params, res.proxies,
                                                         texts),
            "truncated": truncated, "samples": texts[:3]}


def sample_texts(cfg, generator, n: int, seed: int) -> list[str]:
    """n completions of a generator ("initial" = the config's) with the evaluation's fixed sampling seed."""
    if generator == "initial":
        model, tok = assembly.load_generator(cfg)
    else:
        model, tok = models.load_model(str(generator), role="generator"), models.load_tokenizer(str(generator))
    rows = sampling.sample(model, tok, assembly.load_prompts(cfg), n, cfg.grpo.max_completion_length,
                           cfg.grpo.temperature, seed=10_000 + seed, progress=False)
    return [r["completion"] for r in rows]


_ENGINES = {}


def engine_for(cfg):
    """(engine, objective, target tokenizer) of cfg's inner SFT, objective and seed; the last one built is reused, so
    a run's evaluations build it once."""
    key = (json.dumps(cfg.to_dict()["inner_sft"]), json.dumps(cfg.objective, sort_keys=True), cfg.seed)
    if key not in _ENGINES:
        _ENGINES.clear()
        _ENGINES[key] = assembly.build_engine(cfg)
    return _ENGINES[key]


# -- the command ------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("--arms", nargs="+", help="default: every arm of the study")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None,
                   help="GRPO steps (default: the config's grpo.steps; at a --point, TOTAL_EXAMPLES / its batch)")
    p.add_argument("--eval-n", type=int, default=None,
                   help="completions sampled per end-to-end evaluation (default 64; at a --point 256, one main batch)")
    p.add_argument("--point", choices=list(POINTS), help="the paper regime at this batch-size point")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra config overrides for every arm")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="where runs go (default runs/studies; at a --point runs/paper/POINT)")
    p.add_argument("--docs-dir", type=Path, default=None,
                   help="where the summary and plots go (default docs/results; at a --point docs/results/paper/POINT)")
    p.add_argument("--report", action="store_true", help="only aggregate finished runs and plot")
    args = p.parse_args(argv)
    env.set_threads()
    point = args.point
    runs_dir = (args.runs_dir or default_runs(point)).resolve()
    docs_dir = (args.docs_dir or (DOCS / "paper" / point if point else DOCS)).resolve()
    os.chdir(ROOT)  # configs name their data files relative to the repository root
    steps = args.steps or (point_steps(point) if point else load_config(config_path(args.study)).grpo.steps)
    eval_n = args.eval_n or (4 * POINTS[MAIN_POINT] if point else 64)
    arms = args.arms or STUDY_ARMS.get(args.study, CORE_ARMS)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {list(ARMS)}")
    if not args.report:
        for arm in arms:
            for seed in args.seeds:
                run_one(args.study, arm, seed, steps, eval_n, runs_dir, args.set, point)
    plots.report(args.study, runs_dir / args.study, docs_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
