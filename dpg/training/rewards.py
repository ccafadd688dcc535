"""From completions to rewards and advantages.

completions (generator text) → target token ids → inner SFT run(s) → per-completion rewards → advantages.

Batching. TRL orders a generation batch prompt-major: completion j of prompt p sits at p·n + j (n = num_generations).
* `cross_group`: every completion goes into one SFT run (siblings of a prompt are trained together).
* `inverse_groups`: run j holds completion j of every prompt, so no run holds two siblings (n runs per step).
Estimators (docs/estimators.md has the derivations). With D = (x₁…x_N) ~ π and J = E[Φ(A(D))], the score-function
identity gives ∇J = E[Σᵢ (Φ(A(D)) − bᵢ) ∇log π(xᵢ)] for any bᵢ that does not depend on xᵢ.
* `metagrad` (DPG): reward i = dΦ/dwᵢ of the run holding i, exact: the first-order Taylor estimate of Φ(D) − Φ(D∖i).
* `naive` (the paper's baseline): every completion of run j gets Φ after SFT on run j; no metagradient.
* `first_order`: −lr·∂/∂wᵢ⟨∇L(θ₀), ∇Φ(θ₀)⟩, no unrolling (see `MetagradEngine.first_order`); what exactness buys.
* `loo`: Φ(D) − Φ(D∖i), exact leave-one-out (wᵢ = 0 in the same schedule: with the token-mean normaliser that is
  removal). Unbiased; N + 1 SFT runs, batched by `MetagradEngine.values`.
* `leave_group_out`: the run's examples are partitioned at random by position (never by content) into G groups and
  rᵢ = Φ(D) − Φ(D with i's group removed). Unbiased (the baseline does not depend on xᵢ); G + 1 SFT runs; G = N is
  `loo`, G = 1 is `naive` with the constant baseline Φ(A(∅)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from dpg.engine.metagrad import MetagradEngine
from dpg.config.names import SFT_ESTIMATORS


@dataclass
class Rewards:
    rewards: torch.Tensor  # [N] float64, raw (dΦ/dwᵢ or Φ), completion order
    value: float  # Φ after SFT, mean over the step's runs
    proxies: dict[str, float] = field(default_factory=dict)  # mean over runs
    runs: int = 1
    params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # fine-tuned target of the first run
    # inner SFT steps over the runs, and how many of them the reverse pass served from kept graphs (graph_budget_mb)
    inner_steps: dict[str, int] = field(default_factory=dict)


def completion_text(completion, row: int | None = None) -> str:
    """TRL gives a string, or for chat prompts a list of messages whose last one is the assistant's.

    The text is made valid UTF-8: characters that cannot be encoded (lone surrogates) become "?", since tokenizers
    reject them. An assistant message without content (None: the model wrote no text, e.g. only a tool call) is
    the empty text, scored as writing nothing (`completion_texts` counts these); never the string "None". Content of
    any other kind (a list of parts) is an error naming `row`.
    """
    name = "completion" if row is None else f"completion {row}"
    if _without_content(completion):
        return ""
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        completion = completion[-1]["content"]
        if not isinstance(completion, str):
            raise TypeError(f"{name}: the assistant message's content is {completion!r}, not text")
    if not isinstance(completion, str):
        raise TypeError(f"{name}: expected a string or a list of chat messages, got {type(completion).__name__}")
    return completion.encode("utf-8", errors="replace").decode("utf-8")


def completion_texts(completions: list) -> tuple[list[str], int]:
    """The text of every completion of a batch (`completion_text`), and how many were assistant messages without
    content, scored as empty text (logged per step as `empty_content`)."""
    texts = [completion_text(c, row=i) for i, c in enumerate(completions)]
    return texts, sum(_without_content(c) for c in completions)


def _without_content(completion) -> bool:
    return (isinstance(completion, list) and bool(completion) and isinstance(completion[-1], dict)
            and completion[-1].get("content") is None)


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
                    batching: str, groups: int | None = None, generator: torch.Generator | None = None) -> Rewards:
    """Rewards of every completion; `groups` and `generator` (the random partition) are for `leave_group_out`."""
    if estimator not in SFT_ESTIMATORS:
        raise ValueError(f"reward.estimator: unknown value {estimator!r}; choose one of {list(SFT_ESTIMATORS)}")
    rewards = torch.empty(len(examples), dtype=torch.float64)
    results = []
    for run in sft_runs(len(examples), num_generations, batching):
        data = [examples[i] for i in run]
        res = engine.run(data) if estimator == "metagrad" else engine.evaluate(data)  # Φ is logged for every estimator
        if estimator == "metagrad":
            rewards[run] = res.metagrads.double()
        elif estimator == "naive":
            rewards[run] = res.value
        elif estimator == "first_order":
            rewards[run] = engine.first_order(data).double()
        else:
            partition = ([[i] for i in range(len(data))] if estimator == "loo"
                         else random_partition(len(data), groups, generator))
            rewards[run] = removal_rewards(engine, data, partition, res.value)
        results.append(res)
    proxies = {k: sum(r.proxies[k] for r in results) / len(results) for k in results[0].proxies}
    inner_steps = {"total": sum(r.num_steps for r in results), "from_kept_graphs": sum(r.kept_steps for r in results)}
    return Rewards(rewards, sum(r.value for r in results) / len(results), proxies, len(results), results[0].params,
                   inner_steps)


def random_partition(n: int, groups: int | None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Positions 0…n−1 in `groups` groups of (nearly) equal size, at random: independent of the examples' content."""
    if not isinstance(groups, int) or not 1 <= groups <= n:
        raise ValueError(f"reward.groups: {groups!r} groups for an SFT run of {n} examples; need 1 ≤ groups ≤ {n}")
    perm = torch.randperm(n, generator=generator).tolist()
    return [sorted(perm[g::groups]) for g in range(groups)]


def removal_rewards(engine: MetagradEngine, data: list[list[int]], partition: list[list[int]],
                    value: float) -> torch.Tensor:
    """rᵢ = Φ(D) − Φ(D with the weights of i's group set to 0), every removal in one batched call (`values`)."""
    W = torch.ones(len(partition), len(data), dtype=torch.float64)
    group_of = torch.empty(len(data), dtype=torch.long)
    for g, members in enumerate(partition):
        W[g, members] = 0
        group_of[members] = g
    return value - engine.values(data, W)[group_of]


def advantages(rewards: torch.Tensor, num_generations: int, mode: str, std_eps_rel: float) -> tuple[torch.Tensor, dict]:
    """(r − mean) / (std + eps) per group (`grouped`) or over the whole batch (`batch`), eps = std_eps_rel · spread,
    the spread being the batch's RMS deviation from its mean.

    The floor scales with the rewards' spread and ignores their offset, so metagradients of 1e-9 and Φ values of
    −32 ± 0.002 (naive on l2_norm) are standardised alike: adding a constant to Φ does not change a policy update.
    (A floor relative to RMS(r) shrank naive's advantages by Φ's offset, ~17× on the paper-regime l2_norm.) The
    info dict says which regime a step is in: `raw_std` next to `eps_floor` (and TRL's fixed floor of 1e-4)."""
    r = rewards.double()
    if not torch.isfinite(r).all():
        bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
        raise FloatingPointError(f"rewards are not finite for completions {bad[:20]}")
    spread = (r - r.mean()).pow(2).mean().sqrt().item()
    eps = std_eps_rel * spread if spread > 0 else 1.0  # all rewards equal: advantages are 0 whatever eps is
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
    return pearson(a.argsort().argsort().double(), b.argsort().argsort().double())


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = (a.norm() * b.norm()).item()
    return (a @ b).item() / denom if denom > 0 else math.nan  # a constant has no correlation


def agreement(engine: MetagradEngine, examples: list[list[int]], rewards: torch.Tensor, num_generations: int,
              batching: str, loo_max_examples: int) -> dict[str, float]:
    """Spearman and Pearson correlation of a run's rewards with `first_order` and, where every SFT run holds at most
    `loo_max_examples` examples, with exact `loo`: does the reward still mean what it should? `first_order` is taken
    per SFT run directly: `compute_rewards` would also run an inner SFT for the Φ(D) it logs, which it does not need."""
    runs = sft_runs(len(examples), num_generations, batching)
    first_order = torch.empty(len(examples), dtype=torch.float64)
    for run in runs:
        first_order[run] = engine.first_order([examples[i] for i in run]).double()
    refs = {"first_order": first_order}
    if max(len(r) for r in runs) <= loo_max_examples:  # loo needs Φ(D) anyway: compute_rewards' own path
        refs["loo"] = compute_rewards(engine, examples, num_generations, "loo", batching).rewards
    return {f"{name}_{stat}": corr(rewards, ref) for name, ref in refs.items()
            for stat, corr in (("spearman", spearman), ("pearson", pearson))}
