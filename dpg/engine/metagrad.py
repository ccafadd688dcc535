"""The engine: Φ after inner SFT and its exact derivative dΦ/dwᵢ for every example's loss weight.

Forward: θ₀ → θ₁ → … → θ_K by `opt.update(g_k, s_k, θ_k)`, where g_k = ∇L_k(θ_k; w) (see `dpg.engine.sft`). Each step's
(θ_k, s_k, g_k) is kept for the reverse pass (in memory, on disk, or recomputed: `dpg.engine.states`); no autograd graph
outlives a microbatch, unless the graph budget keeps it (below).

Reverse, with θ̄ = ∇Φ(θ_K) and s̄ = 0, for k = K−1 … 0:
  1. (ḡ, s̄, θ̄) ← VJP of the update at (g_k, s_k, θ_k) applied to (θ̄, s̄)     — optimizer state is differentiated
     (`opt.update_vjp`, written out by hand for SGD and AdamW; tested against torch.func.vjp)
  2. per microbatch of step k, one reverse-over-reverse pass through ⟨∇L_mb(θ_k; w), ḡ⟩ (`hvp_and_dots`) gives
       θ̄ += ∇²L_mb(θ_k)·ḡ                                                   (its gradient in θ)
       dΦ/dw += ∂/∂w ⟨∇L_mb(θ_k; w), ḡ⟩                                     (its gradient in w)
     and at k = 0, where θ̄₀ is never used, a forward-mode `jvp` of the per-example losses gives the second alone,
because L_k = Σᵢ cᵢ(w)·wᵢ·sᵢ(θ) is linear in s: ∂/∂wⱼ⟨∇L_k, ḡ⟩ is cⱼ·⟨∇sⱼ(θ_k), ḡ⟩ plus, for the token-mean
normaliser cᵢ = 1/Σ wⱼnⱼ, the term −nⱼ·cⱼ·⟨∇L_k, ḡ⟩ (`dpg.engine.sft.loss_weight_grad`). No constant factor is dropped.

What is kept: each step's (θ_k, s_k, g_k) and, within `inner_sft.graph_budget_mb` (`dpg.engine.graphs`; default
"auto", a share of the free memory), the autograd graph of the last steps' gradients, built by the forward pass with
create_graph=True on leaves θ_k and w. At a step with a kept graph, step 2 runs only the second backward of that
graph (9 matrix products per microbatch, the full unroll's count); elsewhere it recomputes the gradient first (12),
so that memory need not grow with K beyond the stored states. The kept graphs are measured as they are built and
never hold more than the budget; the metagradients are the same at every budget (tests/test_engine.py).

Data parallel (`data_parallel=True`, torch.distributed initialised): every process holds every example and the same
schedule, but computes only its rows of each microbatch. Two sums cross processes, g_k in the forward and the HVP in
the reverse (one all-reduce each per step); everything else (Φ, the optimizer and its VJP) is replicated, and each
process's dΦ/dwᵢ are for its own rows, all-reduced once at the end so that every process returns the whole vector.

Φ alone for many weight vectors at once (`values`, for exact removals) is one vectorised inner run:
`dpg.engine.batched`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.func import grad, grad_and_value, jvp

from dpg.engine import batched
from dpg.engine.graphs import GradientGraph, GraphBudget, second_backward
from dpg.engine.optim import make_optimizer
from dpg.engine.sft import Params, Step, loss_weight_grad, make_schedule, step_gradient, token_loss_sums
from dpg.engine.sft_config import InnerSFTConfig
from dpg.engine.states import make_store
from dpg.errors import ConfigError, DPGWarning


@dataclass
class MetagradResult:
    value: float  # Φ after SFT
    metagrads: torch.Tensor | None  # [N] dΦ/dwᵢ, in input order (None from `evaluate`)
    proxies: dict[str, float] = field(default_factory=dict)
    num_steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # forward / reverse wall time
    params: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # the fine-tuned target's weights
    kept_steps: int = 0  # steps whose reverse pass ran on the graph the forward kept (inner_sft.graph_budget_mb)
    graph_mb: float = 0.0  # the memory those graphs held (measured)


# What benchmarks/low_precision.py measured against float64 metagradients (docs/gpu.md, "Low-precision metagradients"):
# float32 agreed to 2e-3 relative, bfloat16 with SGD to 1e-2 (cosine 1.00); these two are not worth a word.
BFLOAT16_ADAMW = ("cosine 0.53 to 0.97 with float64's (signs agreeing for 78 to 97 % of the examples) on the "
                  "quickstart target and a 5M GPT-2, and cosine −0.42 with float32's was reported on an 8B model")
FLOAT16 = "Φ or the metagradients were not finite in every measured run, with AdamW and with SGD"


def check_precision(cfg: InnerSFTConfig) -> None:
    """Refuse float16 and warn about bfloat16 with AdamW (its 1/√v amplifies the rounding), unless the config opts
    in (`allow_low_precision`): rewards that point the wrong way would otherwise be trained on silently."""
    if cfg.allow_low_precision:
        return
    if cfg.dtype == "float16":
        raise ConfigError(f"inner_sft.dtype: float16: {FLOAT16}; use float32 (or bfloat16), or set "
                          "inner_sft.allow_low_precision: true")
    if cfg.dtype == "bfloat16" and cfg.optimizer == "adamw":
        warnings.warn(f"inner_sft.dtype: bfloat16: AdamW metagradients had {BFLOAT16_ADAMW}; rewards may point the "
                      "wrong way, use float32 for exact ones", DPGWarning, stacklevel=3)


def prepare_target(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Eager attention and eval mode, in the engine's dtype.

    CPU sdpa/flash kernels implement neither double backward nor forward-mode AD, both of which the reverse pass
    needs; eval mode turns dropout off so that every recomputation of a step gives the same gradient.
    """
    if getattr(model.config, "_attn_implementation", "eager") != "eager":
        model.set_attn_implementation("eager")
    return model.to(dtype).eval()


class MetagradEngine:
    """Exact per-example metagradients of `objective` through the inner SFT run described by `cfg`.

    `objective(model, params) -> scalar tensor` (higher is better); `params` maps parameter names to the fine-tuned
    tensors, while `model`'s own parameters keep the initial weights (the engine never modifies them). A float16
    inner SFT is refused and a bfloat16 one with AdamW warns (`check_precision`), unless cfg.allow_low_precision.
    """

    def __init__(self, model: torch.nn.Module, objective, cfg: InnerSFTConfig, data_parallel: bool = False):
        check_precision(cfg)  # before the target is cast to the dtype
        if data_parallel and not dist.is_initialized():
            raise RuntimeError("data_parallel=True needs torch.distributed to be initialised (torchrun / accelerate)")
        self.shard = (dist.get_rank(), dist.get_world_size()) if data_parallel else (0, 1)
        self.model = prepare_target(model, cfg.torch_dtype)
        self.objective = objective
        self.cfg = cfg
        self.opt = make_optimizer(cfg)
        self.device = next(model.parameters()).device
        named = dict(model.named_parameters())  # tied weights appear once; functional_call re-ties them
        self.params0 = {k: p.detach() for k, p in named.items() if p.requires_grad}
        self.frozen = {k: p.detach() for k, p in named.items() if not p.requires_grad}
        if not self.params0:
            raise ValueError("target model: no parameter requires grad, so inner SFT cannot change it")

    # -- public API -----------------------------------------------------------------------------------------------

    def run(self, examples: list[list[int]], weights: torch.Tensor | None = None) -> MetagradResult:
        """Φ after SFT on `examples` and dΦ/dwᵢ at `weights` (default all ones)."""
        steps = self._schedule(examples)
        w = self._weights(weights, len(examples))
        store = make_store(self.cfg, self.device, len(steps), lambda k, th, s: self._step(steps[k], w, th, s))
        graphs = {}  # step -> its kept GradientGraph; the reverse pass frees each as it uses it
        try:
            t0 = time.perf_counter()
            theta, _ = self._train(steps, w, store, graphs)
            kept, graph_mb = len(graphs), sum(g.nbytes for g in graphs.values()) / 2**20
            phi_grad, phi = grad_and_value(self._phi)(theta)
            value = self._check_value(phi)
            t1 = time.perf_counter()
            metagrads = self._all_reduce(self._reverse(steps, store, w, phi_grad, len(examples), graphs))
            t2 = time.perf_counter()
        finally:
            store.close()
            graphs.clear()
        bad = (~torch.isfinite(metagrads)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"metagradients are not finite for examples {bad[:20]} (of {len(bad)}); "
                                     f"Φ = {value}. Check the learning rate and eps_root (> 0 for AdamW).")
        return MetagradResult(value, metagrads.cpu(), self._proxies(theta), len(steps),
                              {"forward": t1 - t0, "reverse": t2 - t1}, {**self.frozen, **theta}, kept, graph_mb)

    def value(self, examples: list[list[int]], weights: torch.Tensor | None = None) -> float:
        """Φ after SFT with the given loss weights (no metagradient)."""
        return self.evaluate(examples, weights).value

    def evaluate(self, examples: list[list[int]], weights: torch.Tensor | None = None) -> MetagradResult:
        """Φ, proxies and fine-tuned weights after SFT with the given loss weights (`metagrads` is None)."""
        steps = self._schedule(examples)
        t0 = time.perf_counter()
        theta, _ = self._train(steps, self._weights(weights, len(examples)))
        with torch.no_grad():
            value = self._check_value(self._phi(theta))
        return MetagradResult(value, None, self._proxies(theta), len(steps), {"forward": time.perf_counter() - t0},
                              {**self.frozen, **theta})

    def values(self, examples: list[list[int]], weights: torch.Tensor, budget_mb: float = 1024) -> torch.Tensor:
        """Φ after SFT for every row of `weights` [R, N]: equal to `[self.value(examples, w) for w in weights]`
        (float64: to rounding), computed as one vectorised inner run per chunk of rows that fits in `budget_mb`
        (`dpg.engine.batched`); exact removals (`loo`, `leave_group_out`) use it."""
        return batched.values(self, examples, weights, budget_mb)

    def first_order(self, examples: list[list[int]], weights: torch.Tensor | None = None) -> torch.Tensor:
        """rᵢ = −lr·∂/∂wᵢ ⟨∇L(θ₀; w), ∇Φ(θ₀)⟩, i.e. −lr·cᵢ·⟨∇sᵢ(θ₀), ∇Φ(θ₀)⟩ plus the token-mean normaliser's term:
        the change of Φ that one SGD step would predict, taken at the initial weights with no unrolling (TracIn-like).
        For a single inner SGD step and a Φ linear in θ it equals the exact metagradient; otherwise it is the baseline
        that shows what exactness buys."""
        steps = self._schedule(examples)
        w = self._weights(weights, len(examples))
        phi_grad = grad(self._phi)(self.params0)
        rewards = torch.zeros(len(examples), dtype=self.cfg.torch_dtype, device=self.device)
        for step in steps:
            for mb in step.microbatches:
                _, dots = jvp(lambda p: token_loss_sums(self.model, p, mb), (self.params0,), (phi_grad,))
                rewards -= self.cfg.lr * loss_weight_grad(mb, w, dots)
        return self._all_reduce(rewards).cpu()

    def train(self, examples: list[list[int]], weights: torch.Tensor | None = None) -> Params:
        """The fine-tuned parameters (plain SFT, no metagradient)."""
        steps = self._schedule(examples)
        return self._train(steps, self._weights(weights, len(examples)))[0]

    # -- forward ---------------------------------------------------------------------------------------------------

    def _schedule(self, examples):
        return make_schedule(examples, self.cfg, self.device, self.shard)

    def _step(self, step: Step, w, theta, state, graph: GradientGraph | None = None):
        local = ({p: t.detach() for p, t in graph.grads.items()} if graph is not None
                 else step_gradient(self.model, theta, step, w))
        g = self._all_reduce(local)
        return g, *self.opt.update(g, state, theta)

    def _train(self, steps: list[Step], w: torch.Tensor, store=None, graphs: dict | None = None):
        """SFT from θ₀. With `graphs`, the last steps whose gradient graphs fit in the graph budget leave them there."""
        theta, state = self.params0, self.opt.init(self.params0)
        budget = GraphBudget(self.cfg, self.device, steps, self._state_bytes()) if graphs is not None else None
        for k, step in enumerate(steps):
            graph = budget.keep(self.model, k, theta, w, graphs) if budget is not None else None
            g, next_theta, next_state = self._step(step, w, theta, state, graph)
            if store is not None:
                store.save(k, (theta, state, g))
            theta, state = next_theta, next_state
        return theta, state

    def _phi(self, theta: Params) -> torch.Tensor:
        out = self.objective(self.model, {**self.frozen, **theta})
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"objective must return a scalar tensor, got {shape}")
        return out.reshape(())

    def _check_value(self, phi: torch.Tensor) -> float:
        value = float(phi)
        if not math.isfinite(value):
            raise FloatingPointError(f"objective value Φ after inner SFT is {value}; the inner run diverged or the "
                                     "objective is not finite at the fine-tuned weights")
        return value

    def _proxies(self, theta: Params) -> dict[str, float]:
        if not hasattr(self.objective, "proxies"):
            return {}
        with torch.no_grad():
            return {k: float(v) for k, v in self.objective.proxies(self.model, {**self.frozen, **theta}).items()}

    # -- reverse ---------------------------------------------------------------------------------------------------

    def _reverse(self, steps, store, w, theta_bar, n, graphs: dict) -> torch.Tensor:
        metagrads = torch.zeros(n, dtype=self.cfg.torch_dtype, device=self.device)
        state_bar = None  # Φ does not read the final optimizer state: its cotangent starts at zero
        for k in reversed(range(len(steps))):
            theta, state, g = store.load(k)
            if state_bar is None:
                state_bar = {key: {p: torch.zeros_like(t) for p, t in v.items()}
                             for key, v in state.items() if key != "step"}
            g_bar, state_bar, theta_bar = self.opt.update_vjp(g, state, theta, theta_bar, state_bar)
            graph = graphs.pop(k, None)
            if graph is not None:  # kept by the forward pass: only the second backward runs (no HVP at k = 0)
                hvp_sum, w_grad = second_backward(graph, g_bar, hvp=k > 0)
                metagrads += w_grad.detach()
            else:
                hvp_sum = {p: torch.zeros_like(t) for p, t in theta.items()} if k > 0 else None
                for mb in steps[k].microbatches:
                    if k > 0:
                        hvp, w_grad = hvp_and_dots(self.model, theta, mb, w, g_bar)
                        hvp_sum = {p: hvp_sum[p] + hvp[p] for p in hvp_sum}
                    else:
                        _, dots = jvp(lambda p: token_loss_sums(self.model, p, mb), (theta,), (g_bar,))
                        w_grad = loss_weight_grad(mb, w, dots)
                    metagrads += w_grad.detach()
            if k > 0:
                hvp_sum = self._all_reduce(hvp_sum)
                theta_bar = {p: theta_bar[p] + hvp_sum[p] for p in theta_bar}
        return metagrads

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _state_bytes(self) -> int:
        """One stored step (θ_k, s_k, g_k): the parameters twice and the optimizer's moments (AdamW 2, SGD ≤ 1)."""
        moments = 2 if self.cfg.optimizer == "adamw" else int(self.cfg.momentum > 0)
        return (2 + moments) * sum(p.numel() * p.element_size() for p in self.params0.values())

    def _weights(self, weights, n) -> torch.Tensor:
        if weights is None:
            return torch.ones(n, dtype=self.cfg.torch_dtype, device=self.device)
        w = torch.as_tensor(weights, dtype=self.cfg.torch_dtype, device=self.device)
        if w.shape != (n,):
            raise ValueError(f"weights: shape {tuple(w.shape)} does not match the {n} examples")
        if not torch.isfinite(w).all():
            raise ValueError("weights: contains non-finite values")
        return w

    def _all_reduce(self, tree):
        """Sum a tensor or a dict of tensors over the processes (one flat buffer, one collective)."""
        if self.shard[1] == 1:
            return tree
        if isinstance(tree, torch.Tensor):
            out = tree.clone()
            dist.all_reduce(out)
            return out
        flat = torch.cat([t.reshape(-1) for t in tree.values()])
        dist.all_reduce(flat)
        return dict(zip(tree, (c.view_as(t) for c, t in zip(flat.split([t.numel() for t in tree.values()]),
                                                          tree.values()))))


def hvp_and_dots(model, params: Params, mb, weights: torch.Tensor, v: Params) -> tuple[Params, torch.Tensor]:
    """(∇²L_mb(θ)·v, ∂/∂w ⟨∇_θ L_mb(θ; w), v⟩) in one reverse-over-reverse pass: both are gradients of
    ⟨∇_θ L_mb(θ, w), v⟩, the first with respect to θ, the second with respect to every loss weight (a vector over
    all examples: cᵢ·⟨∇sᵢ(θ), v⟩ for the microbatch's rows, plus the token-mean normaliser's term for every example
    of the step). Plain autograd here is 1.4-1.8× faster on CPU than torch.func's forward-over-reverse
    `jvp(grad(L))` (docs/performance.md); no graph outlives the call."""
    graph = GradientGraph.start(params, weights)
    graph.add(model, mb)
    return second_backward(graph, v)
