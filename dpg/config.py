"""Typed run configuration: dataclasses, loaded from YAML with `key=value` overrides, validated before any model loads.

Every error names the offending key (dotted, e.g. `grpo.num_generations`) and its value.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from dpg.sft import InnerSFTConfig


class ConfigError(ValueError):
    pass


@dataclass
class ModelSpec:
    name_or_path: str = "tiny"  # "tiny" = the embedded default; else a local HF directory or a cached hub name
    tokenizer: str | None = None  # default: the model's own ("tiny" models: "tiny-bpe"; "tiny-char" also exists)
    dtype: str = "float32"
    untie_lm_head: bool = False  # weight-pattern objectives need an untied head (else the picture lands in wte too)
    attn_implementation: str | None = None  # targets are always switched to "eager" by the engine
    pretrain_steps: int = 0  # embedded tiny generator only: LM-pretrain it on the shipped corpus first (cached)


@dataclass
class PromptsConfig:
    source: str = "builtin"  # "builtin", a .txt (one per line), a .jsonl, or a directory saved by `datasets`
    field: str = "prompt"  # JSONL / dataset column holding the prompt
    limit: int | None = None  # keep only the first `limit` prompts
    chat: bool = False  # wrap each prompt as a user message (for instruct generators with a chat template)


@dataclass
class RewardConfig:
    estimator: Literal["metagrad", "naive", "first_order"] = "metagrad"
    batching: Literal["cross_group", "inverse_groups"] = "cross_group"
    advantages: Literal["grouped", "batch"] = "grouped"
    # Advantages are (r − mean) / (std + eps) with eps = std_eps_rel · RMS(raw rewards of the batch): a floor relative
    # to the rewards' own scale (TRL's fixed 1e-4 would crush metagradients of ~1e-9 to nothing).
    std_eps_rel: float = 1e-3
    # A failed reward computation either stops the run (`raise`, default) or skips that step's policy update and logs
    # `reward_failed` (`skip_step`). It never becomes a value: no zeros, NaNs or stale rewards stand in for it.
    on_error: Literal["raise", "skip_step"] = "raise"
    # Every k steps of a metagrad run, also compute the first-order rewards of the same batch and log their Spearman
    # rank correlation with the exact ones (0 = never).
    compare_first_order_every: int = 0


@dataclass
class GRPOSection:
    steps: int = 20  # GRPO steps = generation batches = reward calls = policy optimizer steps
    prompts_per_step: int = 8
    num_generations: int = 4  # completions per prompt (a GRPO group)
    micro_batch_size: int = 8  # completions per policy forward/backward; must divide prompts_per_step·num_generations
    learning_rate: float = 1e-4
    beta: float = 0.0  # KL coefficient (the paper uses 0)
    temperature: float = 1.0
    max_completion_length: int = 32
    epsilon: float = 0.2  # PPO clip range
    loss_type: str = "dapo"
    max_grad_norm: float = 1.0

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


@dataclass
class LoggingConfig:
    wandb: bool = False  # offline unless WANDB_MODE says otherwise
    wandb_project: str = "dpg"
    sample_completions: int = 4  # completions written to the JSONL each step
    heatmap_every: int = 5  # weight-pattern objectives: save a PNG every k steps (0 = never)
    progress: bool = True


@dataclass
class CheckpointConfig:
    save_every: int = 10  # GRPO steps between checkpoints (generator, optimizer, scheduler, RNG, step)
    keep: int = 2


@dataclass
class DPGConfig:
    generator: ModelSpec = field(default_factory=ModelSpec)
    target: ModelSpec = field(default_factory=lambda: ModelSpec(untie_lm_head=True))
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    objective: dict = field(default_factory=lambda: {"name": "l2_norm"})
    inner_sft: InnerSFTConfig = field(default_factory=InnerSFTConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    grpo: GRPOSection = field(default_factory=GRPOSection)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    seed: int = 0
    output_dir: str = "runs/dpg"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inner_sft"]["dtype"] = str(self.inner_sft.dtype).removeprefix("torch.")
        d["inner_sft"]["betas"] = list(self.inner_sft.betas)
        return d


# -- loading -----------------------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> DPGConfig:
    """YAML file (optional) + `a.b=value` overrides (values parsed as YAML) → validated DPGConfig."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. grpo.steps=5")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[leaf] = yaml.safe_load(value)
    cfg = build(DPGConfig, raw, "")
    validate(cfg)
    return cfg


def build(cls, raw: Any, prefix: str):
    """Construct dataclass `cls` from a mapping, checking every key and type."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known in {prefix.rstrip('.') or 'the top level'}: "
                          f"{', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}") for k, v in raw.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:  # dataclass __post_init__ checks (InnerSFTConfig) already name their key
        raise ConfigError(str(e)) from None


def _coerce(tp, value, key):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: invalid value {value!r}; choose one of {list(args)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 1e-3 without a dot as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if getattr(tp, "__module__", "") == "torch" and isinstance(value, str):  # torch.dtype given by name
        return value
    raise ConfigError(f"{key}: cannot read a value of type {tp} from {value!r}")


def validate(cfg: DPGConfig) -> None:
    """Checks across fields, done before any model is built."""
    g = cfg.grpo
    for key in ("steps", "prompts_per_step", "num_generations", "micro_batch_size", "max_completion_length"):
        if getattr(g, key) < 1:
            raise ConfigError(f"grpo.{key}: must be at least 1, got {getattr(g, key)}")
    if g.num_generations < 2:
        raise ConfigError(f"grpo.num_generations: GRPO compares completions of one prompt, needs ≥ 2, got "
                          f"{g.num_generations}")
    if g.completions_per_step % g.micro_batch_size:
        raise ConfigError(f"grpo.micro_batch_size: {g.micro_batch_size} does not divide prompts_per_step × "
                          f"num_generations = {g.completions_per_step}")
    for key in ("learning_rate", "temperature"):
        if not getattr(g, key) > 0:
            raise ConfigError(f"grpo.{key}: must be positive, got {getattr(g, key)}")
    if cfg.reward.std_eps_rel <= 0:
        raise ConfigError(f"reward.std_eps_rel: must be positive, got {cfg.reward.std_eps_rel}")
    if cfg.reward.estimator == "naive" and cfg.reward.batching != "inverse_groups":
        raise ConfigError("reward.batching: the naive estimator gives one reward per SFT run, so it needs "
                          f"'inverse_groups', got {cfg.reward.batching!r}")
    if cfg.reward.estimator == "naive" and cfg.reward.advantages != "batch":
        raise ConfigError("reward.advantages: with the naive estimator every completion of a group comes from a "
                          f"different SFT run; use 'batch', got {cfg.reward.advantages!r}")
    if cfg.reward.compare_first_order_every < 0:
        raise ConfigError(f"reward.compare_first_order_every: must be ≥ 0, got {cfg.reward.compare_first_order_every}")
    for key in ("save_every", "keep"):
        if getattr(cfg.checkpoint, key) < 1:
            raise ConfigError(f"checkpoint.{key}: must be at least 1, got {getattr(cfg.checkpoint, key)}")
    for role in ("generator", "target"):
        spec = getattr(cfg, role)
        if spec.dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise ConfigError(f"{role}.dtype: unknown dtype {spec.dtype!r}")
    src = cfg.prompts.source
    if src != "builtin" and not Path(src).exists():
        raise ConfigError(f"prompts.source: file or directory not found: {src}")
    if cfg.prompts.limit is not None and cfg.prompts.limit < 1:
        raise ConfigError(f"prompts.limit: must be at least 1, got {cfg.prompts.limit}")
    if not isinstance(cfg.objective.get("name"), str):
        raise ConfigError(f"objective.name: expected the name of an objective, got {cfg.objective.get('name')!r}")
