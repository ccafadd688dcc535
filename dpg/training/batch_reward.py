"""The reward of a whole generation batch: completions → target examples → inner SFT run(s) → rewards and advantages.

TRL-free: the GRPO trainer (`dpg.training.trainer`) calls it once per step with every process's completions, and
`dpg train --dry-run` and the tests build it on its own.
"""

from __future__ import annotations

import time

import torch

from dpg.config.schema import DPGConfig
from dpg.engine.metagrad import MetagradEngine
from dpg.errors import RewardError
from dpg.training import heuristics
from dpg.training.rewards import agreement, advantages, completion_texts, compute_rewards, to_target_examples


class DPGReward:
    """Scores a whole generation batch: completions → target examples → SFT run(s) → rewards and advantages."""

    __name__ = "dpg"  # TRL names the reward's metrics after this

    def __init__(self, engine: MetagradEngine, target_tokenizer, cfg: DPGConfig):
        if target_tokenizer.eos_token_id is None:
            raise ValueError("target tokenizer: has no eos_token; dpg needs one to end every example")
        self.engine, self.tokenizer, self.cfg = engine, target_tokenizer, cfg
        self.last: dict | None = None  # what the trainer and the logger read after each call
        # Heuristic estimators (levenshtein, embedding, langid): references / encoder / classifier built once, here.
        self.heuristic = (heuristics.build_scorer(cfg, target_tokenizer)
                          if cfg.reward.estimator in heuristics.ESTIMATORS else None)
        # leave_group_out's random partitions: seeded, and drawn from positions only (never from the completions)
        self.partitions = torch.Generator().manual_seed(cfg.seed)

    def __call__(self, prompts, completions, **_) -> list[float]:
        return self.score(prompts, completions)["rewards"].tolist()

    def score(self, prompts: list, completions: list, step: int | None = None) -> dict:
        t0 = time.perf_counter()
        r = self.cfg.reward
        n = self.cfg.grpo.num_generations
        try:
            texts, empty_content = completion_texts(completions)
            examples, truncated = to_target_examples(texts, self.tokenizer, self.cfg.inner_sft.max_length)
            if self.heuristic is not None:  # rewards from the text alone; Φ still logged: one SFT per run, no metagrad
                out = compute_rewards(self.engine, examples, n, "naive", r.batching)
                out.rewards = self.heuristic(texts)
            else:
                out = compute_rewards(self.engine, examples, n, r.estimator, r.batching, r.groups, self.partitions)
            adv, info = advantages(out.rewards, n, r.advantages, r.std_eps_rel)
            k = r.compare_every
            if k and step is not None and step % k == 0:  # first_order_spearman, loo_pearson, … beside the scaling
                info.update(agreement(self.engine, examples, out.rewards, n, r.batching, r.compare_loo_max))
        except Exception as e:  # never turn a failure into a reward: re-raise with where it happened
            raise RewardError(f"reward computation failed at GRPO step {step} ({len(completions)} completions, objective "
                               f"{self.cfg.objective.get('name')!r}, estimator {r.estimator}): {e}") from e
        self.last = {"rewards": out.rewards, "advantages": adv, "value": out.value, "proxies": out.proxies,
                     "params": out.params,
                     "info": info, "runs": out.runs, "inner_steps": out.inner_steps, "truncated": truncated,
                     "empty_content": empty_content,
                     "prompts": list(prompts),
                     "completions": texts, "seconds": time.perf_counter() - t0}
        return self.last
