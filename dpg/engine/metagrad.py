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

Kept graphs (`inner_sft.graph_budget_mb` > 0): step 2 first recomputes the microbatch gradients with
create_graph=True, then differentiates them again. The forward pass can build that graph instead (`GradientGraph`:
the step's gradient on leaves θ_k and w) and keep it, so that the reverse pass runs only the second backward
(`second_backward`): 9 matrix products per microbatch instead of 12, the unroll's count, for the memory of the graph.
It keeps the last steps that fit, since the reverse pass frees those first. The first microbatch graph built is
measured (`_SavedBytes`) and every step's graph estimated from it (`_first_kept`); graphs are built from the first
step that should fit, one microbatch at a time and measured as they grow, the earliest kept one dropped whenever the
total would pass the budget, and a step that alone does not fit given up. So the kept graphs never hold more than
the budget, and the forward pass at most one microbatch's graph more, which the reverse pass holds anyway. A step
without a kept graph takes the recompute path. The metagradients are the same (tests/test_engine.py).

Data parallel (`data_parallel=True`, torch.distributed initialised): every process holds every example and the same
schedule, but computes only its rows of each microbatch. Two sums cross processes, g_k in the forward and the HVP in
the reverse (one all-reduce each per step); everything else (Φ, the optimizer and its VJP) is replicated, and each
process's dΦ/dwᵢ are for its own rows, all-reduced once at the end so that every process returns the whole vector.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.func import grad, grad_and_value, jvp

from dpg.engine.optim import make_optimizer
from dpg.engine.sft import (Params, Step, loss_weight_grad, make_schedule, microbatch_loss, step_gradient,
                     token_loss_sums)
from dpg.engine.sft_config import InnerSFTConfig
from dpg.engine.sft_config import AUTO_GRAPH_BUDGET
from dpg.engine.states import make_store


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
    tensors, while `model`'s own parameters keep the initial weights (the engine never modifies them).
    """

    def __init__(self, model: torch.nn.Module, objective, cfg: InnerSFTConfig, data_parallel: bool = False):
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
        (float64: to rounding), computed as one vectorised inner run per chunk of rows (torch.func.vmap over the
        weights, the parameters and optimizer state replicated per row). Rows per chunk: as many as fit in
        `budget_mb` at (4 copies of θ + one microbatch's saved activations) per row. On CPU a chunk of small runs costs
        a few single runs (docs/performance.md); exact removals (`loo`, `leave_group_out`) use it."""
        W = torch.as_tensor(weights, dtype=self.cfg.torch_dtype, device=self.device)
        if W.ndim != 2 or W.shape[1] != len(examples):
            raise ValueError(f"weights: shape {tuple(W.shape)}; expected [rows, {len(examples)}] (one row per run)")
        if not torch.isfinite(W).all():
            raise ValueError("weights: contains non-finite values")
        if self.shard[1] > 1:  # a collective per step cannot run inside vmap: one run at a time
            return torch.tensor([self.value(examples, w) for w in W], dtype=torch.float64)
        steps = self._schedule(examples)
        chunk = max(1, int(budget_mb * 2**20 // self._row_bytes(steps, W[0])))

        def run(w):
            theta, state = self.params0, self.opt.init(self.params0)
            for step in steps:
                g = None
                for mb in step.microbatches:  # torch.func.grad: plain autograd.grad cannot run under vmap
                    g_mb = grad(lambda p: microbatch_loss(self.model, p, mb, w)[0])(theta)
                    g = g_mb if g is None else {k: g[k] + g_mb[k] for k in g}
                theta, state = self.opt.update(g, state, theta)
            return self._phi(theta)

        with torch.no_grad():
            # randomness="same": an objective that draws with its own seeded generator sees the same draws per row
            out = torch.cat([torch.func.vmap(run, randomness="same")(W[i:i + chunk])
                             for i in range(0, len(W), chunk)])
        bad = (~torch.isfinite(out)).nonzero().flatten().tolist()
        if bad:
            raise FloatingPointError(f"objective value Φ after inner SFT is not finite for weight rows {bad[:20]} "
                                     f"(of {len(bad)}); the inner run diverged or the objective is not finite there")
        return out.double().cpu()

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
        budget = self._graph_budget() if graphs is not None else 0
        first_kept = None  # graphs are built from this step on; estimated on the first microbatch measured
        for k, step in enumerate(steps):
            graph = None
            if budget and step.microbatches and (first_kept is None or k >= first_kept):
                graph, first_kept = self._kept_graph(steps, k, theta, w, graphs, budget, first_kept)
            g, next_theta, next_state = self._step(step, w, theta, state, graph)
            if store is not None:
                store.save(k, (theta, state, g))
            theta, state = next_theta, next_state
        return theta, state

    def _kept_graph(self, steps, k, theta, w, graphs, budget, first_kept):
        """(step k's GradientGraph, added to `graphs`, or None where it is not kept; first_kept). Built one
        microbatch at a time: after each, the earliest kept graphs are dropped while the total passes the budget,
        and the step is given up (it recomputes) if it alone passes it or if the estimate made on the very first
        microbatch says it should not be kept."""
        graph, meter = GradientGraph.start(theta, w), _SavedBytes()
        for mb in steps[k].microbatches:
            with meter:
                graph.add(self.model, mb)
            graph.nbytes = meter.holding(graph)
            if first_kept is None:
                first_kept = _first_kept(steps, mb, graph, budget)
            if k < first_kept or graph.nbytes > budget:
                return None, first_kept
            while graph.nbytes + sum(g.nbytes for g in graphs.values()) > budget:
                del graphs[min(graphs)]
        graphs[k] = graph
        return graph, first_kept

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

    def _row_bytes(self, steps: list[Step], w: torch.Tensor) -> int:
        """Memory of one vmapped run: θ, the optimizer's two moments and a gradient, plus the activations that the
        largest microbatch saves for its backward (measured with saved-tensor hooks on one forward)."""
        mb = max((mb for step in steps for mb in step.microbatches), key=lambda m: m.input_ids.numel())
        leaves = {k: p.detach().requires_grad_(True) for k, p in self.params0.items()}
        saved = _SavedBytes()
        with torch.enable_grad(), saved:
            microbatch_loss(self.model, leaves, mb, w)
        return 4 * sum(p.numel() * p.element_size() for p in self.params0.values()) + sum(saved.storages.values())

    def _graph_budget(self) -> float:
        """inner_sft.graph_budget_mb in bytes; "auto": AUTO_GRAPH_BUDGET of the memory free on the target's device."""
        budget = self.cfg.graph_budget_mb
        if budget != "auto":
            return budget * 2**20
        if self.device.type == "cuda":
            return AUTO_GRAPH_BUDGET * torch.cuda.mem_get_info(self.device)[0]
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            raise RuntimeError("inner_sft.graph_budget_mb: 'auto' reads the free host memory from /proc/meminfo, "
                               "which this system lacks; give a number of MB instead") from None
        return AUTO_GRAPH_BUDGET * int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M).group(1)) * 1024

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


@dataclass
class GradientGraph:
    """∇_θ Σ_mb L_mb(θ; w) over the microbatches added, computed with create_graph=True on the detached leaves θ and
    w, so that ⟨grads, v⟩ can be differentiated again in both (`second_backward`). Its value is bit-identical to
    `step_gradient`'s (the same kernels, summed in the same order): a kept step trains exactly like a recomputed one."""

    leaves: Params
    weights: torch.Tensor
    grads: Params | None = None
    nbytes: int = 0  # the memory it holds, where measured (`_SavedBytes`)

    @classmethod
    def start(cls, params: Params, weights: torch.Tensor) -> GradientGraph:
        leaves = {k: p.detach().requires_grad_(True) for k, p in params.items()}
        return cls(leaves, weights.detach().requires_grad_(True))

    def add(self, model, mb) -> None:
        with torch.enable_grad():
            loss = microbatch_loss(model, self.leaves, mb, self.weights)[0]
            g = torch.autograd.grad(loss, list(self.leaves.values()), create_graph=True, materialize_grads=True)
            self.grads = (dict(zip(self.leaves, g)) if self.grads is None
                          else {k: self.grads[k] + x for k, x in zip(self.leaves, g)})


def second_backward(graph: GradientGraph, v: Params, hvp: bool = True) -> tuple[Params | None, torch.Tensor]:
    """(∇_θ⟨grads, v⟩, the Hessian-vector product, or None without `hvp`; ∂/∂w⟨grads, v⟩ over all examples). Frees
    the graph."""
    with torch.enable_grad():
        directional = sum((graph.grads[k] * v[k]).sum() for k in graph.leaves)
        inputs = [*graph.leaves.values(), graph.weights] if hvp else [graph.weights]
        *h, w_grad = torch.autograd.grad(directional, inputs, materialize_grads=True)
    return (dict(zip(graph.leaves, h)) if hvp else None), w_grad


class _SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """While active, notes every storage that autograd saves for a backward, by address: one freed meanwhile counts
    until its address is reused, so the total errs on the safe side."""

    def __init__(self):
        self.storages = {}
        # Not `t` itself: a saved output would then hold its own grad_fn, a cycle through C++ that gc cannot free.
        # Autograd re-attaches the saved tensor's grad_fn when it unpacks it, so the double backward is unchanged.
        super().__init__(lambda t: self._note(t, self.storages).detach(), lambda t: t)

    @staticmethod
    def _note(t: torch.Tensor, storages: dict) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def holding(self, graph: GradientGraph) -> int:
        """The memory `graph` holds: what its nodes saved, its leaves θ_k and its gradient g_k (counted even where
        the memory store shares θ_k and g_k)."""
        storages = dict(self.storages)
        for t in (*graph.leaves.values(), *graph.grads.values()):
            self._note(t, storages)
        return sum(storages.values())


def _tokens(step_or_mb) -> int:
    mbs = step_or_mb.microbatches if isinstance(step_or_mb, Step) else [step_or_mb]
    return sum(mb.input_ids.numel() for mb in mbs)


def _first_kept(steps: list[Step], mb, graph: GradientGraph, budget: float) -> int:
    """The first of the last steps whose graphs should fit in `budget` bytes, estimated from the graph of the one
    microbatch `mb`: θ and g weigh the same in every step, the saved activations scale with the padded tokens."""
    fixed = 2 * sum(t.numel() * t.element_size() for t in graph.grads.values())
    per_token = (graph.nbytes - fixed) / _tokens(mb)
    total = 0.0
    for j in reversed(range(len(steps))):
        total += fixed + per_token * _tokens(steps[j]) if steps[j].microbatches else 0
        if total > budget:
            return j + 1
    return 0
