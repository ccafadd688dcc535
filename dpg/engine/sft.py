"""Inner SFT as pure functions: the recipe, the batch schedule, the weighted loss and one step's gradient.

The loss of one inner step k is L_k(θ; w) = Σ_i c_i(w) · w_i · s_i(θ), where s_i is example i's next-token
cross-entropy summed over its n_i real (non-padding) predicted tokens, and c_i depends on the normalisation:

* ``token_mean`` (default): c_i = 1 / Σ_j w_j·n_j over the step, i.e. L_k = Σ w_i s_i / Σ w_i n_i, the weighted
  token mean. The loss weights mean multiplicity: w_i = 0 is exactly "example i removed from its step" and w_i = 2
  "example i twice", so dΦ/dw_i is the derivative of the training algorithm actually run, normaliser included. At
  w = 1 this is the loss a standard SFT trainer minimises (HF's with gradient accumulation), and it does not change
  when a step is split differently into microbatches or padded to another length, so metagradients don't either.
* ``official``: c_i = 1 / (max_length · B_mb), B_mb the size of i's microbatch, independent of w; the microbatch
  gradients of a step are summed. This is the official DPG code (sum over tokens ÷ fixed length, mean over the
  microbatch, summed accumulation); use it to reproduce the paper. Its effective learning rate grows with
  ``grad_accum_steps``, and w_i = 0 leaves example i in the mean's denominator.

A step whose weights are all 0 (every example removed) has loss 0: the optimizer still takes its step (AdamW's
momentum and weight decay move θ), so removal keeps the schedule fixed. Since L_k is linear in s, ∂/∂w of
⟨∇_θ L_k, v⟩ is ∂/∂w of L_k with every s_i replaced by ⟨∇s_i, v⟩ (`loss_weight_grad`): the engine needs nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.func import functional_call

from dpg.engine.sft_config import InnerSFTConfig

Params = dict[str, torch.Tensor]

@dataclass
class Microbatch:
    index: torch.Tensor  # [B] positions of the examples in the caller's list
    input_ids: torch.Tensor  # [B, T] right-padded
    attention_mask: torch.Tensor  # [B, T]
    coef: torch.Tensor  # [B] the w-independent part of c_i: 1/(max_length·B_mb) (official) or 1 (token_mean)
    # token_mean: every example of the whole step (all shards) and its predicted-token count n_j, for Σ_j w_j·n_j
    step_index: torch.Tensor | None = None
    step_tokens: torch.Tensor | None = None

    def scale(self, weights: torch.Tensor) -> torch.Tensor | float:
        """1 / Σ_j w_j·n_j over the step (token_mean; 0 when every weight is 0), or 1 (official)."""
        if self.step_index is None:
            return 1.0
        z = (weights[self.step_index] * self.step_tokens).sum()
        return torch.where(z != 0, 1 / torch.where(z != 0, z, 1), 0)  # inner where: no inf in the backward


@dataclass
class Step:
    microbatches: list[Microbatch] = field(default_factory=list)


def validate_examples(examples: list[list[int]], max_length: int) -> None:
    if len(examples) == 0:
        raise ValueError("examples: the list is empty; inner SFT needs at least one example")
    for i, ex in enumerate(examples):
        if len(ex) < 2:
            raise ValueError(f"examples[{i}]: has {len(ex)} token(s); next-token loss needs at least 2")
        if len(ex) > max_length:
            raise ValueError(f"examples[{i}]: has {len(ex)} tokens, over inner_sft.max_length={max_length}; "
                             "truncate before calling the engine")


def make_schedule(examples: list[list[int]], cfg: InnerSFTConfig, device: torch.device | str = "cpu",
                  shard: tuple[int, int] = (0, 1)) -> list[Step]:
    """Shuffle (fixed seed, reshuffled each epoch) and cut into steps of `grad_accum_steps` microbatches.

    The last step of an epoch may be short when the example count does not divide; its coefficients account for it.
    `shard = (rank, world)` keeps rows rank, rank + world, … of every microbatch (data-parallel engine): the
    coefficients still count the whole step's tokens, so the shards' gradients sum to the global one.
    """
    rank, world = shard
    validate_examples(examples, cfg.max_length)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(examples), generator=gen) if cfg.shuffle else torch.arange(len(examples))
        for start in range(0, len(order), cfg.examples_per_step):
            chunk = order[start:start + cfg.examples_per_step]
            step_tokens = None
            if cfg.loss_normalization == "token_mean":
                step_tokens = (chunk.to(device), torch.tensor([len(examples[i]) - 1 for i in chunk.tolist()],
                                                              dtype=cfg.torch_dtype, device=device))
            steps.append(Step([_collate(examples, mb[rank::world], len(mb), cfg, step_tokens, device)
                               for mb in chunk.split(cfg.microbatch_size) if len(mb[rank::world])]))
    return steps


def _collate(examples, index, mb_size, cfg, step_tokens, device) -> Microbatch:
    seqs = [examples[i] for i in index.tolist()]
    width = max(len(s) for s in seqs)  # pad to the microbatch's longest: causal attention makes this exact
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, :len(s)] = 1
    c = 1.0 if cfg.loss_normalization == "token_mean" else 1.0 / (cfg.max_length * mb_size)
    coef = torch.full((len(seqs),), c, dtype=cfg.torch_dtype, device=device)
    return Microbatch(index.to(device), ids.to(device), mask.to(device), coef, *(step_tokens or (None, None)))


def token_loss_sums(model: torch.nn.Module, params: Params, mb: Microbatch) -> torch.Tensor:
    """s_i: next-token cross-entropy of each example, summed over its real tokens. Shape [B]."""
    logits = functional_call(model, params, (), {"input_ids": mb.input_ids, "attention_mask": mb.attention_mask}).logits
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), mb.input_ids[:, 1:], reduction="none")
    return (ce * mb.attention_mask[:, 1:]).sum(dim=1)


def microbatch_loss(model, params: Params, mb: Microbatch, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_i c_i(w) w_i s_i over the microbatch, s) — the loss to differentiate, and the per-example sums as aux."""
    s = token_loss_sums(model, params, mb)
    return weighted_sum(mb, weights, s), s


def weighted_sum(mb: Microbatch, weights: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Σ_i c_i(w)·w_i·s_i over the microbatch's rows."""
    return mb.scale(weights) * (mb.coef * weights[mb.index] * s).sum()


def loss_weight_grad(mb: Microbatch, weights: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """∂/∂w of Σ_i c_i(w)·w_i·dots_i, a vector over all examples: with dots_i = ⟨∇s_i(θ), v⟩ this is ∂/∂w of
    ⟨∇_θ L_mb(θ; w), v⟩, normaliser included (it reaches the weights of the step's other microbatches too)."""
    with torch.enable_grad():
        w = weights.detach().requires_grad_(True)
        return torch.autograd.grad(weighted_sum(mb, w, dots.detach()), w)[0]


def step_gradient(model, params: Params, step: Step, weights: torch.Tensor) -> Params:
    """g_k = ∇_θ L_k: microbatch gradients summed, one microbatch's activations alive at a time (zero for a shard
    that holds no row of this step)."""
    total = {k: torch.zeros_like(p) for k, p in params.items()} if not step.microbatches else None
    for mb in step.microbatches:
        g = microbatch_gradient(model, params, mb, weights)
        total = g if total is None else {k: total[k] + g[k] for k in total}
    return total


def microbatch_gradient(model, params: Params, mb: Microbatch, weights: torch.Tensor) -> Params:
    """∇_θ of `microbatch_loss` by plain reverse-mode autograd on detached leaves: bit-identical to
    `torch.func.grad`, with ~20% less CPU and less memory (no functorch wrapping; docs/performance.md). No graph
    outlives the call."""
    with torch.enable_grad():
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        loss, _ = microbatch_loss(model, leaves, mb, weights.detach())
        grads = torch.autograd.grad(loss, list(leaves.values()), materialize_grads=True)
    return dict(zip(leaves, grads))
