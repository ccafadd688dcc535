"""From completions to rewards and advantages.

completions (generator text) → target token ids → inner SFT run(s) → per-completion rewards → advantages.

Batching. TRL orders a generation batch prompt-major: completion j of prompt p sits at p·n + j (n = num_generations).
* `cross_group`: every completion goes into one SFT run (siblings of a prompt are trained together).
* `inverse_groups`: run j holds completion j of every prompt, so no run holds two siblings (n runs per step).
Estimators.
* `metagrad` (DPG): reward i = dΦ/dwᵢ of the run holding i, exact.
* `naive` (the paper's baseline): every completion of run j gets Φ after SFT on run j; no metagradient.
* `first_order`: −lr·cᵢ·⟨∇sᵢ(θ₀), ∇Φ(θ₀)⟩, no unrolling (see `MetagradEngine.first_order`); shows what exactness buys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dpg.metagrad import MetagradEngine


@dataclass
class Rewards:
    rewards: torch.Tensor  # [N] float64, raw (dΦ/dwᵢ or Φ), completion order
    value: float  # Φ after SFT, mean over the step's runs
    proxies: dict[str, float] = field(default_factory=dict)  # mean over runs
    runs: int = 1
    params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # fine-tuned target of the first run


def completion_text(completion, row: int | None = None) -> str:
    """TRL gives a string, or for chat prompts a list of messages whose last one is the assistant's.

    The text is made valid UTF-8: characters that cannot be encoded (lone surrogates) become "?", since tokenizers
    reject them. A message whose content is not text (None for a tool call, a list of parts) is an error naming
    `row`: it is never trained on as the string "None".
    """
    name = "completion" if row is None else f"completion {row}"
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1].get("content")
        if not isinstance(completion, str):
            raise TypeError(f"{name}: the assistant message's content is {completion!r}, not text")
    if not isinstance(completion, str):
        raise TypeError(f"{name}: expected a string or a list of chat messages, got {type(completion).__name__}")
    return completion.encode("utf-8", errors="replace").decode("utf-8")


def to_target_examples(texts: list[str], tokenizer, max_length: int) -> tuple[list[list[int]], int]:
    """[BOS] + tokens + [EOS] in the target's vocabulary, cut to `max_length` tokens (keeping the start).

    BOS makes the first real token a prediction target; EOS teaches where a document ends and gives an empty
    completion a well-defined 2-token example. A tokenizer without BOS (GPT-2's) uses EOS for it, as GPT-2 does
    between documents. Returns the examples and how many were cut.
    """
    examples, truncated = [], 0
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("target tokenizer: has no eos_token; dpg needs one to end every example")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = [bos, *ids, eos]
        if len(ids) > max_length:
            ids, truncated = ids[:max_length], truncated + 1
        examples.append(ids)
    return examples, truncated


def sft_runs(n_completions: int, num_generations: int, batching: str) -> list[list[int]]:
    if n_completions % num_generations:
        raise ValueError(f"{n_completions} completions are not whole groups of num_generations={num_generations}")
    if batching == "cross_group":
        return [list(range(n_completions))]
    if batching == "inverse_groups":
        return [list(range(j, n_completions, num_generations)) for j in range(num_generations)]
    raise ValueError(f"reward.batching: unknown value {batching!r}")


def compute_rewards(engine: MetagradEngine, examples: list[list[int]], num_generations: int, estimator: str,
                    batching: str) -> Rewards:
    rewards = torch.empty(len(examples), dtype=torch.float64)
    if estimator not in ("metagrad", "naive", "first_order"):
        raise ValueError(f"reward.estimator: unknown value {estimator!r}")
    results = []
    for run in sft_runs(len(examples), num_generations, batching):
        data = [examples[i] for i in run]
        res = engine.run(data) if estimator == "metagrad" else engine.evaluate(data)  # Φ is logged for every estimator
        if estimator == "metagrad":
            rewards[run] = res.metagrads.double()
        elif estimator == "naive":
            rewards[run] = res.value
        else:
            rewards[run] = engine.first_order(data).double()
        results.append(res)
    proxies = {k: sum(r.proxies[k] for r in results) / len(results) for k in results[0].proxies}
    return Rewards(rewards, sum(r.value for r in results) / len(results), proxies, len(results), results[0].params)


def advantages(rewards: torch.Tensor, num_generations: int, mode: str, std_eps_rel: float) -> tuple[torch.Tensor, dict]:
    """(r − mean) / (std + eps) per group (`grouped`) or over the whole batch (`batch`), eps = std_eps_rel · RMS(r).

    The floor scales with the rewards, so metagradients of 1e-9 and Φ values of 1 are standardised alike. The info
    dict says which regime a step is in: `raw_std` next to `eps_floor` (and TRL's fixed floor of 1e-4 for contrast).
    """
    r = rewards.double()
    if not torch.isfinite(r).all():
        bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
        raise FloatingPointError(f"rewards are not finite for completions {bad[:20]}")
    rms = r.pow(2).mean().sqrt().item()
    eps = std_eps_rel * rms if rms > 0 else 1.0  # all rewards exactly 0: advantages are 0 whatever eps is
    if mode == "grouped":
        g = r.view(-1, num_generations)
        adv = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + eps)).flatten()
        group_std = g.std(1).mean().item()
    elif mode == "batch":
        adv = (r - r.mean()) / (r.std() + eps)
        group_std = math.nan
    else:
        raise ValueError(f"reward.advantages: unknown value {mode!r}")
    info = {"raw_mean": r.mean().item(), "raw_std": r.std().item(), "raw_min": r.min().item(),
            "raw_max": r.max().item(), "raw_group_std": group_std, "eps_floor": eps, "trl_eps_floor": 1e-4}
    return adv, info


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation (ties broken by position; metagradients are continuous, so ties are rare)."""
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return (ra @ rb / (ra.norm() * rb.norm())).item()


def first_order_agreement(engine: MetagradEngine, examples: list[list[int]], exact: torch.Tensor,
                          num_generations: int, batching: str) -> float:
    """Spearman correlation between the first-order rewards and the exact ones, over the whole batch."""
    approx = torch.empty(len(examples), dtype=torch.float64)
    for run in sft_runs(len(examples), num_generations, batching):
        approx[run] = engine.first_order([examples[i] for i in run]).double()
    return spearman(approx, exact)
