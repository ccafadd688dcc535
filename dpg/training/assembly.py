"""Building a run's parts from its config, without TRL: the prompts, the generator, the target on its device and the
engine with its objective, tried once on the initial target (`preflight`). `dpg train` assembles these into a GRPO
trainer; `evaluate`, `generate`, `calibrate`, `check` and `--dry-run` use them directly, so they never import TRL.
A `console` (dpg.run.console.Console) is where a first-run pretraining shows its progress, and where the objective's
value on the initial target is reported; without one they are silent."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

import dpg.objectives as objectives
from dpg.config.names import TINY_NAMES
from dpg.config.schema import ConfigError, DPGConfig, check_environment
from dpg.engine.metagrad import MetagradEngine
from dpg.run.console import Console, number
from dpg.training import models


def load_prompts(cfg: DPGConfig) -> list:
    src = cfg.prompts.source
    if src == "builtin":
        prompts = models.prompt_lines()
    elif Path(src).is_dir():
        from datasets import load_from_disk

        ds = load_from_disk(src)
        if cfg.prompts.field not in ds.column_names:
            raise ValueError(f"prompts.field: column {cfg.prompts.field!r} not in {src} (has {ds.column_names})")
        prompts = list(ds[cfg.prompts.field])
    elif src.endswith(".jsonl"):
        prompts = []
        for n, line in enumerate(_prompt_lines(src), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise ValueError(f"prompts.source: {src} line {n} is not JSON ({err})") from None
                if not isinstance(row, dict) or cfg.prompts.field not in row:
                    raise ValueError(f"prompts.field: {src} line {n} has no key {cfg.prompts.field!r}")
                if not isinstance(row[cfg.prompts.field], (str, list)):  # a list: chat messages
                    raise ValueError(f"prompts.field: {src} line {n}: {cfg.prompts.field!r} is "
                                     f"{row[cfg.prompts.field]!r}, not text")
                prompts.append(row[cfg.prompts.field])
    else:
        prompts = [line for line in _prompt_lines(src) if line.strip()]
    prompts = prompts[:cfg.prompts.limit] if cfg.prompts.limit else prompts
    if not prompts:
        raise ValueError(f"prompts.source: no prompts in {src}")
    if cfg.prompts.repeat and len(prompts) < cfg.grpo.prompts_per_step:
        prompts = prompts * math.ceil(cfg.grpo.prompts_per_step / len(prompts))
    if cfg.prompts.chat:
        return [[{"role": "user", "content": p}] for p in prompts]
    return prompts


def _prompt_lines(src: str) -> list[str]:
    try:
        return Path(src).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"prompts.source: {src} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


def load_generator(cfg: DPGConfig, console: Console | None = None):
    spec = cfg.generator
    name = model_name(spec, "generator", cfg.seed, console)
    tok = models.load_tokenizer(spec.tokenizer or name)
    model = models.load_model(name, role="generator", tokenizer=tok, dtype=_dtype(spec.dtype),
                              attn_implementation=spec.attn_implementation, seed=cfg.seed)
    return model, tok


def load_target(cfg: DPGConfig, console: Console | None = None):
    spec = cfg.target
    name = model_name(spec, "target", cfg.seed + 1, console)
    tok = models.load_tokenizer(spec.tokenizer or name)
    # untie_lm_head applies after pretraining, when the model is loaded: it is how the inner SFT treats the head (an
    # objective on the head must not move the input embeddings), as the paper unties GPT-2 only to fine-tune it; so
    # the cache entry does not depend on it. The tiny target is built untied anyway (TINY_DEFAULTS), so for it the
    # order changes nothing: its head and input embeddings pretrain as separate weights.
    model = models.load_model(name, role="target", tokenizer=tok, untie_lm_head=spec.untie_lm_head,
                              dtype=_dtype(spec.dtype), seed=cfg.seed + 1)
    return model.to(target_device()), tok


def model_name(spec, role: str, seed: int, console: Console | None = None) -> str:
    """What to load for `role`: spec.name_or_path, or with `pretrain_steps` the cached directory of that tiny model
    LM-pretrained on the shipped corpus (models.pretrained_tiny_model), initialised and pretrained with `seed`."""
    if not spec.pretrain_steps:
        return spec.name_or_path
    kind = TINY_NAMES.get(spec.tokenizer or spec.name_or_path)
    if spec.name_or_path not in TINY_NAMES or kind is None:
        raise ValueError(f"{role}.pretrain_steps: only the embedded tiny models {sorted(TINY_NAMES)} with a "
                         f"tiny tokenizer are pretrained here, not name_or_path={spec.name_or_path!r}, "
                         f"tokenizer={spec.tokenizer!r}")
    return str(models.pretrained_tiny_model(cache_dir(), role=role, kind=kind, steps=spec.pretrain_steps, seed=seed,
                                            console=console))


def target_device() -> torch.device:
    """Where the target and its inner SFT run: this process's GPU when CUDA is visible (LOCAL_RANK under torchrun /
    accelerate launch, else GPU 0), the CPU otherwise. The engine computes on the target's device."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def build_engine(cfg: DPGConfig, data_parallel: bool = False, console: Console | None = None):
    """(engine, objective, target tokenizer): the reward side of a run, also used by `dpg evaluate` and `dpg check`.
    `data_parallel`: every process of a torchrun / accelerate launch computes a shard of each SFT run.

    The objective's name and parameters are checked before the target loads, and the objective is tried once on the
    initial target (`preflight`) before the engine is returned: before a run writes or generates anything."""
    objectives.check_config(cfg.objective, context=("model", "tokenizer"))
    target, target_tok = load_target(cfg, console)
    objective = objectives.from_config(cfg.objective, model=target, tokenizer=target_tok)
    engine = MetagradEngine(target, objective, cfg.inner_sft, data_parallel=data_parallel)
    phi, proxies = preflight(engine, cfg.objective["name"])
    if console is not None:
        console.info(f"objective {cfg.objective['name']} on the initial target: Φ {number(phi)}"
                     + "".join(f", {k} {number(v)}" for k, v in proxies.items()))
    return engine, objective, target_tok


def preflight(engine: MetagradEngine, name: str) -> tuple[float, dict[str, float]]:
    """Φ, its gradient and the proxies at the target's initial weights θ₀, computed once as every reward call will
    (torch.func, in the engine's dtype), so that an objective that cannot serve is refused within seconds, not after
    a batch has been generated: a Φ that is not a scalar tensor, not finite, not differentiable in `params` (computed
    from the model's own weights, or detached), or whose gradient is not finite is a ValueError naming objective.name
    and what it returned. Any other error raised inside the objective keeps its traceback, with a note saying where
    it was called. Returns (Φ(θ₀), proxies(θ₀))."""
    params = {**engine.frozen, **engine.params0}
    tracked = []

    def phi(theta):
        out = engine.objective(engine.model, {**engine.frozen, **theta})
        if not isinstance(out, torch.Tensor):
            raise _Refused(f"objective.name: {name!r} returned {type(out).__name__} {_short(out)} at the target's "
                           "initial weights; an objective returns a scalar tensor computed from `params`")
        if out.numel() != 1:
            raise _Refused(f"objective.name: {name!r} returned a tensor of shape {tuple(out.shape)} at the target's "
                           "initial weights; an objective returns a scalar tensor (one number)")
        tracked.append(out.requires_grad)
        return out.reshape(())

    try:
        grads, value = torch.func.grad_and_value(phi)(engine.params0)
        with torch.no_grad():
            proxies = ({k: float(v) for k, v in engine.objective.proxies(engine.model, params).items()}
                       if hasattr(engine.objective, "proxies") else {})
    except _Refused:
        raise
    except Exception as err:
        err.add_note(f"raised by objective {name!r} at the target's initial weights (dpg tries it once before a run)")
        raise
    value = float(value.detach())  # attached where Φ read the model's own weights (refused below)
    if not math.isfinite(value):
        raise ValueError(f"objective.name: {name!r} returned Φ = {value} at the target's initial weights; Φ must be "
                         "finite there")
    if not tracked[0]:
        raise ValueError(f"objective.name: {name!r} returned Φ = {value:.6g}, which does not depend on `params` (no "
                         "gradient): compute it from `params`, e.g. torch.func.functional_call(model, params, ...), "
                         "not from the model's own weights or a detached tensor")
    bad = {k: int((~torch.isfinite(g)).sum()) for k, g in grads.items() if not torch.isfinite(g).all()}
    if bad:
        raise ValueError(f"objective.name: {name!r} has a gradient that is not finite at the target's initial weights "
                         f"(Φ = {value:.6g}; non-finite entries per parameter: {bad})")
    return value, proxies


class _Refused(ValueError):
    """What an objective returned is not a scalar tensor (raised inside the gradient transform)."""


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def cache_dir() -> Path:
    return Path(os.environ.get("DPG_CACHE", Path.home() / ".cache" / "dpg"))


def check_prompt_count(cfg: DPGConfig, prompts: list) -> None:
    """TRL's sampler draws each step's prompts without repetition and drops an incomplete batch: with fewer prompts
    than grpo.prompts_per_step no step would ever run, so refuse that up front."""
    if len(prompts) < cfg.grpo.prompts_per_step:
        raise ConfigError(f"grpo.prompts_per_step: {cfg.grpo.prompts_per_step} is more than the {len(prompts)} "
                          f"prompts of prompts.source {cfg.prompts.source!r}; TRL fills a step with distinct prompts, "
                          "so no step could run. Give more prompts, lower prompts_per_step, or set prompts.repeat: true")


def lora_config(cfg: DPGConfig):
    """generator.lora as peft's LoraConfig (TRL's `peft_config`), or None for full fine-tuning."""
    lora = cfg.generator.lora
    if lora is None:
        return None
    check_environment(cfg)  # a clear error naming generator.lora when peft is missing
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      modules_to_save=lora.modules_to_save, bias="none", task_type="CAUSAL_LM")
