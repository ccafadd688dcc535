"""Where the forward pass keeps each inner step's (θ_k, s_k, g_k) until the reverse pass needs it.

Three strategies trade memory for time; all give bit-identical metagradients (the same operations run in the same
order, and a safetensors round trip is exact):
* `memory`    — every step on `state_device` (host RAM by default): K × |θ, s, g|, no extra compute;
* `disk`      — every step in a safetensors file under `state_dir`, written by a background thread while the next
                step computes; RAM holds one step;
* `recompute` — only (θ_k, s_k) at every `segment`-th step (default ⌈√K⌉); the reverse pass re-runs the forward of
                one segment at a time: ≈ 2√K states in memory for one extra forward pass.
"""

from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

State = tuple[dict, dict, dict]  # (θ_k, optimizer state s_k with its int "step", g_k)


def _map(fn, tree):
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map(fn, v) for v in tree)
    return tree


class MemoryStore:
    def __init__(self, device: torch.device, state_device: str):
        self.device, self.state_device, self.states = device, state_device, []

    def save(self, k: int, state: State) -> None:
        self.states.append(_map(lambda t: t.detach().to(self.state_device), state))

    def load(self, k: int) -> State:
        return _map(lambda t: t.to(self.device), self.states[k])

    def close(self) -> None:
        self.states.clear()


class DiskStore:
    def __init__(self, device: torch.device, state_dir: str | None):
        self.device = device
        self.dir = tempfile.TemporaryDirectory(prefix="dpg-states-", dir=state_dir)
        self.writer = ThreadPoolExecutor(max_workers=1)  # safetensors releases the GIL while writing
        self.pending, self.steps, self.names = {}, {}, None

    def save(self, k: int, state: State) -> None:
        theta, opt_state, g = state
        self.steps[k] = opt_state["step"]
        flat = {f"theta/{n}": t for n, t in theta.items()} | {f"g/{n}": t for n, t in g.items()}
        for key, tree in opt_state.items():
            if key != "step":
                flat |= {f"state/{key}/{n}": t for n, t in tree.items()}
        flat = {n: t.detach().to("cpu").contiguous() for n, t in flat.items()}
        self.names = list(flat)  # safetensors sorts its keys; keep the parameters' own order
        self.pending[k] = self.writer.submit(save_file, flat, self._path(k))

    def load(self, k: int) -> State:
        self.pending.pop(k).result()  # re-raises a failed write instead of reading a partial file
        theta, g, opt_state = {}, {}, {"step": self.steps[k]}
        tensors = load_file(self._path(k), device=str(self.device))
        for name in self.names:
            t = tensors[name]
            kind, rest = name.split("/", 1)
            if kind == "theta":
                theta[rest] = t
            elif kind == "g":
                g[rest] = t
            else:
                key, param = rest.split("/", 1)
                opt_state.setdefault(key, {})[param] = t
        return theta, opt_state, g

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.dir.cleanup()

    def _path(self, k: int) -> str:
        return str(Path(self.dir.name) / f"step{k:06d}.safetensors")


class RecomputeStore:
    """Checkpoints (θ_k, s_k) every `segment` steps; `load` replays the forward of a whole segment once, from its
    checkpoint, and serves it from memory while the reverse pass walks back through it."""

    def __init__(self, num_steps: int, segment: int | None, forward: Callable[[int, dict, dict], State]):
        self.segment = segment or math.isqrt(num_steps - 1) + 1  # ⌈√K⌉
        self.forward = forward  # (k, θ_k, s_k) -> (g_k, θ_{k+1}, s_{k+1})
        self.num_steps = num_steps
        self.checkpoints, self.cache = {}, {}

    def save(self, k: int, state: State) -> None:
        if k % self.segment == 0:
            theta, opt_state, _ = state
            self.checkpoints[k] = (theta, opt_state)

    def load(self, k: int) -> State:
        if k not in self.cache:
            start = k - k % self.segment
            theta, opt_state = self.checkpoints[start]
            self.cache = {}
            for j in range(start, min(start + self.segment, self.num_steps)):
                g, next_theta, next_state = self.forward(j, theta, opt_state)
                self.cache[j] = (theta, opt_state, g)
                theta, opt_state = next_theta, next_state
        return self.cache[k]

    def close(self) -> None:
        self.checkpoints, self.cache = {}, {}


def make_store(cfg, device: torch.device, num_steps: int, forward: Callable[[int, dict, dict], State]):
    if cfg.state_storage == "memory":
        return MemoryStore(device, cfg.state_device)
    if cfg.state_storage == "disk":
        return DiskStore(device, cfg.state_dir)
    return RecomputeStore(num_steps, cfg.recompute_segment, forward)
