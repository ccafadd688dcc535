"""Kept graphs: the forward pass keeps the autograd graphs of the last inner steps' gradients, within
`inner_sft.graph_budget_mb`, so that the reverse pass differentiates them again instead of recomputing them.

Without a kept graph, the reverse pass at step k recomputes each microbatch gradient ∇L_mb(θ_k; w) with
create_graph=True and then differentiates ⟨∇L_mb, ḡ⟩ in θ and w: 12 matrix products per microbatch of a linear
layer (docs/performance.md). Where the forward pass has built that gradient with create_graph=True on leaves θ_k and w
(`GradientGraph`) and kept it, the reverse pass runs only the second backward (`second_backward`): 9, the full
unroll's count, for the memory of the graph.

The budget holds the last steps that fit, since the reverse pass frees those first:
  1. the first microbatch graph built is measured (`SavedBytes`: every storage autograd saves, plus θ_k and g_k);
  2. every step's graph is estimated from it (θ_k and g_k weigh the same in every step, the saved activations scale
     with the padded tokens), which gives the first step worth keeping (`_first_kept`);
  3. from that step on, graphs are built one microbatch at a time and measured as they grow; the earliest kept graph
     is dropped whenever the total would pass the budget, and a step that alone passes it is given up
     (`GraphBudget.keep`).
So the kept graphs never hold more than the budget, and the forward pass at most one microbatch's graph more, which
the reverse pass holds anyway. A step without a kept graph takes the recompute path: the metagradients are the same
at every budget (tests/test_engine.py).

"auto" (`graph_budget`, the default) is AUTO_GRAPH_BUDGET of the memory the run can still take on the target's device,
after the per-step states that the store will hold there, and keeps no graph at step 0 (`GraphBudget`): so the run
holds at most the budget more than the recompute path would, and the other part of the free memory is left for the
reverse pass (measured in docs/performance.md).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from dpg.engine.sft import Params, Step, microbatch_loss
from dpg.engine.sft_config import AUTO_GRAPH_BUDGET, InnerSFTConfig


@dataclass
class GradientGraph:
    """∇_θ Σ_mb L_mb(θ; w) over the microbatches added, computed with create_graph=True on the detached leaves θ and
    w, so that ⟨grads, v⟩ can be differentiated again in both (`second_backward`). Its value is bit-identical to
    `step_gradient`'s (the same kernels, summed in the same order): a kept step trains exactly like a recomputed one."""

    leaves: Params
    weights: torch.Tensor
    grads: Params | None = None
    nbytes: int = 0  # the memory it holds, where measured (`SavedBytes`)

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


class SavedBytes(torch.autograd.graph.saved_tensors_hooks):
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


class GraphBudget:
    """Which of a run's steps keep their gradient graph, within `nbytes` (`graph_budget`). Under "auto" step 0 keeps
    none: its reverse pass is a forward-mode JVP that holds no graph, so a graph built there could be the largest the
    run ever holds (a K = 1 run would build one only to measure it); from step 1 on, the reverse pass holds one
    microbatch's graph anyway."""

    def __init__(self, cfg: InnerSFTConfig, device: torch.device, steps: list[Step], state_bytes: int):
        self.steps = steps
        self.nbytes = graph_budget(cfg, device, len(steps), state_bytes)
        self.start = 1 if cfg.graph_budget_mb == "auto" else 0
        self.first_kept = None  # graphs are built from this step on; estimated on the first microbatch measured

    def keep(self, model, k: int, theta: Params, w: torch.Tensor, graphs: dict) -> GradientGraph | None:
        """Step k's GradientGraph, added to `graphs`, or None where it is not kept. Built one microbatch at a time:
        after each, the earliest kept graphs are dropped while the total passes the budget, and the step is given up
        (it recomputes) if it alone passes it or if the estimate made on the very first microbatch says it should not
        be kept."""
        step = self.steps[k]
        if not self.nbytes or k < self.start or not step.microbatches or k < (self.first_kept or 0):
            return None
        graph, meter = GradientGraph.start(theta, w), SavedBytes()
        for mb in step.microbatches:
            with meter:
                graph.add(model, mb)
            graph.nbytes = meter.holding(graph)
            if self.first_kept is None:
                self.first_kept = _first_kept(self.steps, mb, graph, self.nbytes)
            if k < self.first_kept or graph.nbytes > self.nbytes:
                return None
            while graph.nbytes + sum(g.nbytes for g in graphs.values()) > self.nbytes:
                del graphs[min(graphs)]
        graphs[k] = graph
        return graph


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


def graph_budget(cfg: InnerSFTConfig, device: torch.device, steps: int, state_bytes: int) -> float:
    """inner_sft.graph_budget_mb in bytes. "auto": AUTO_GRAPH_BUDGET of what the run can still take on the target's
    device, its free memory less what the state store will hold there for `steps` steps of `state_bytes` each; the
    other part is left to the reverse pass (its cotangents and one microbatch's recomputed graph)."""
    if cfg.graph_budget_mb != "auto":
        return cfg.graph_budget_mb * 2**20
    if cfg.state_storage == "memory":
        held, where = steps, torch.device(cfg.state_device)
    elif cfg.state_storage == "recompute":  # its checkpoints and one segment's states, on the target's device
        segment = cfg.recompute_segment or math.isqrt(steps - 1) + 1
        held, where = -(-steps // segment) + segment, device
    else:  # disk: the step waiting to be written
        held, where = 1, torch.device("cpu")
    stored = held * state_bytes if where.type == device.type else 0
    return AUTO_GRAPH_BUDGET * max(0.0, free_memory(device) - stored)


def free_memory(device: torch.device) -> float:
    """Bytes this process can still allocate on `device`. CUDA: the device's free memory plus the blocks this process's
    caching allocator holds unused. Host: the smaller of the system's available memory and the container's
    (cgroup) headroom, shared evenly by the processes a launcher started on this machine (LOCAL_WORLD_SIZE); 0 where
    neither /proc/meminfo nor sysconf says (no graph is then kept)."""
    if device.type == "cuda":
        return (torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device)
                - torch.cuda.memory_allocated(device))
    try:
        meminfo = Path("/proc/meminfo").read_text()
        available = int(re.search(r"^MemAvailable:\s+(\d+) kB", meminfo, re.M).group(1)) * 1024
    except (OSError, AttributeError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return 0.0
    for limit, usage in (("memory.max", "memory.current"),
                         ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:  # cgroup v2, then v1; "max" (or v1's huge number) means no limit of its own
            headroom = int(Path("/sys/fs/cgroup", limit).read_text()) - int(Path("/sys/fs/cgroup", usage).read_text())
        except (OSError, ValueError):
            continue
        available = min(available, max(headroom, 0))
        break
    return available / int(os.environ.get("LOCAL_WORLD_SIZE", 1))
