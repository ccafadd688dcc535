"""Score a sample set with a judge of the held-out-judge replication (docs/protocols/replication.md, "Judges").

    python -m experiments.judge SAMPLES.jsonl.gz --study STUDY --seed S --judge NAME [NAME ...] [--set KEY=VALUE ...]

SAMPLES holds {"prompt", "completion"} rows, gzip-compressed JSONL (what `python -m experiments.replication` writes
under docs/results/replication/samples/); S is the seed of the run the samples belong to. A judge
(experiments/judges.yaml) fine-tunes its target on its slice of the samples with its recipe, once per repeat, and
reads the study's Φ; the score is the mean over the repeats with its standard error. Prints one JSON object per
judge. Nothing under runs/ is read: the LM-pretrained tiny targets are built once and cached under $DPG_CACHE.

The target and every inner SFT field a judge does not set are the study's config at the bs256_m4 point as the
`dpg_adamw` arm trains it (experiments/run.py, `--set grpo.beta=0.04`); the samples are tokenised as training does
(`to_target_examples`: [BOS] + tokens + [EOS], cut to inner_sft.max_length).
"""

from __future__ import annotations

from experiments import env  # first: the environment before torch and transformers load

import argparse
import dataclasses
import gzip
import json
import math
import os
import sys
from functools import lru_cache
from pathlib import Path

import yaml

from dpg import stats
from dpg.config.schema import load_config

ROOT = Path(__file__).resolve().parents[1]
JUDGES_FILE = Path(__file__).with_name("judges.yaml")
POINT = "bs256_m4"
POINT_SET = ("grpo.beta=0.04",)  # the earlier batch's `--set`, part of the point the replication trains at
JUDGE_FIELDS = {"target_seed", "optimizer", "lr", "examples_per_step", "steps", "epochs", "samples", "repeats",
                "shuffle_seed", "role"}


@dataclasses.dataclass(frozen=True)
class Judge:
    name: str
    target_seed: tuple[int, str]  # (base, "seed" | "repeat"): pretrained with seed base + the run's seed or repeat
    optimizer: str
    lr: float
    examples_per_step: int
    steps: int
    epochs: int
    samples: tuple[int, int]  # rows [first, end) of the sample set
    repeats: int
    shuffle_seed: int  # inner_sft.seed of repeat r: shuffle_seed + r
    role: str

    def target_for(self, seed: int, repeat: int) -> int:
        base, plus = self.target_seed
        return base + (seed if plus == "seed" else repeat)

    def recipe(self, repeat: int) -> tuple:
        """The inner_sft fields this judge sets in repeat r, as (name, value) pairs."""
        return (("optimizer", self.optimizer), ("lr", self.lr), ("microbatch_size", self.examples_per_step),
                ("grad_accum_steps", 1), ("epochs", self.epochs), ("seed", self.shuffle_seed + repeat))


def load_judges(path: Path = JUDGES_FILE) -> tuple[dict[str, Judge], dict[str, str]]:
    """(judges by name, primary judge by study) from experiments/judges.yaml, checked: a wrong entry is an error
    naming the judge and field."""
    raw = yaml.safe_load(Path(path).read_text())
    judges = {}
    for name, d in raw["judges"].items():
        if set(d) != JUDGE_FIELDS:
            raise ValueError(f"{path}: judge {name}: fields {sorted(set(d) ^ JUDGE_FIELDS)} missing or unknown")
        for key in ("target_seed", "shuffle_seed"):
            if set(d[key]) != {"base", "plus"} or d[key]["plus"] not in ("seed", "repeat"):
                raise ValueError(f"{path}: judge {name}: {key} must be {{base: N, plus: seed | repeat}}, got {d[key]}")
        if d["shuffle_seed"]["plus"] != "repeat":
            raise ValueError(f"{path}: judge {name}: shuffle_seed must change with the repeat (plus: repeat)")
        first, end = d["samples"]
        if not 0 <= first < end:
            raise ValueError(f"{path}: judge {name}: samples must be [first, end) with 0 <= first < end, got "
                             f"{d['samples']}")
        steps = d["epochs"] * math.ceil((end - first) / d["examples_per_step"])
        if steps != d["steps"]:
            raise ValueError(f"{path}: judge {name}: steps {d['steps']}, but {end - first} samples in steps of "
                             f"{d['examples_per_step']} for {d['epochs']} epoch(s) are {steps}")
        judges[name] = Judge(name, (d["target_seed"]["base"], d["target_seed"]["plus"]), d["optimizer"],
                             float(d["lr"]), d["examples_per_step"], d["steps"], d["epochs"], (first, end),
                             d["repeats"], d["shuffle_seed"]["base"], d["role"])
    unknown = {study: name for study, name in raw["primary"].items() if name not in judges}
    if unknown:
        raise ValueError(f"{path}: primary: no such judge(s) {unknown}")
    return judges, dict(raw["primary"])


def study_config(study: str, seed: int, extra: tuple[str, ...] = (), arm: str = "dpg_adamw"):
    """The study's config at the bs256_m4 point as ARM trains it, with seed `seed` (its generator is pretrained with
    `seed`, its target with `seed + 1`); `extra`: further overrides after the point's (tests shrink the models)."""
    from experiments import run

    return load_config(run.config_path(study), [*run.arm_overrides(arm, POINT, [*POINT_SET, *extra]), f"seed={seed}"])


@lru_cache(maxsize=32)
def _target(study: str, target_seed: int, extra: tuple[str, ...]):
    """(target model, objective, tokenizer, study config) for the target pretrained with `target_seed`."""
    from dpg.training import assembly

    cfg = study_config(study, target_seed - 1, extra)  # load_target pretrains with the config's seed + 1
    engine, objective, tok = assembly.build_engine(cfg)
    return engine.model, objective, tok, cfg


@lru_cache(maxsize=64)
def _engine(study: str, target_seed: int, recipe: tuple, extra: tuple[str, ...]):
    """An engine for one (target, recipe): the target's every other inner_sft field is the study config's."""
    from dpg.engine.metagrad import MetagradEngine

    model, objective, tok, cfg = _target(study, target_seed, extra)
    return MetagradEngine(model, objective, dataclasses.replace(cfg.inner_sft, **dict(recipe))), tok


def judge(study: str, seed: int, samples: list[str], judge_name: str, extra: tuple[str, ...] = ()) -> dict:
    """Φ of the study after the judge's SFT on its slice of `samples` (completion texts of a run of seed `seed`),
    per repeat, with their mean and standard error (None for one repeat): {"mean", "se", "values", "proxies"}."""
    from dpg.training.rewards import to_target_examples

    judges, _ = load_judges()
    if judge_name not in judges:
        raise ValueError(f"--judge: no judge {judge_name!r} in {JUDGES_FILE}; known: {sorted(judges)}")
    j = judges[judge_name]
    first, end = j.samples
    if len(samples) < end:
        raise ValueError(f"samples: judge {j.name} reads rows {first}-{end - 1}, the sample set has {len(samples)}")
    values, proxies = [], {}
    for r in range(j.repeats):
        engine, tok = _engine(study, j.target_for(seed, r), j.recipe(r), tuple(extra))
        examples, _ = to_target_examples(samples[first:end], tok, engine.cfg.max_length)
        res = engine.evaluate(examples)
        if res.num_steps != j.steps:
            raise RuntimeError(f"judge {j.name}: ran {res.num_steps} SFT steps, {JUDGES_FILE.name} declares {j.steps}")
        values.append(res.value)
        for k, v in res.proxies.items():
            proxies.setdefault(k, []).append(v)
    mean, se = stats.mean_se(values)
    return {"mean": mean, "se": None if math.isnan(se) else se, "values": values, "proxies": proxies}


def read_samples(path: Path) -> list[dict]:
    """The {"prompt", "completion"} rows of a gzip JSONL sample file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None) -> int:
    judges, _ = load_judges()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("samples", type=Path, help="a gzip JSONL file of {prompt, completion} rows")
    p.add_argument("--study", required=True)
    p.add_argument("--seed", type=int, required=True, help="the seed of the run the samples belong to")
    p.add_argument("--judge", nargs="+", choices=list(judges), default=list(judges), help="default: every judge")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config overrides after the point's (e.g. a smaller target.pretrain_steps for a quick look)")
    args = p.parse_args(argv)
    from dpg.run.console import quiet_libraries

    quiet_libraries("info")
    env.set_threads()
    completions = [row["completion"] for row in read_samples(args.samples)]
    os.chdir(ROOT)  # configs name their data files relative to the repository root
    for name in args.judge:
        print(json.dumps({"judge": name, **judge(args.study, args.seed, completions, name, tuple(args.set))}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
