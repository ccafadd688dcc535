"""A config's values beyond their types: every number finite and in range, lengths within the models' positions,
paths that exist or can be written; and YAML errors as `file:line:col: message`. Torch-free, so a bad config is
refused in well under a second, before anything is imported or written. Each error is one line naming the key and
the value (`dpg.errors.ConfigError`, also importable from dpg.config.schema)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from dpg.run.checkpoints import run_files
from dpg.errors import ConfigError
from dpg.run.fsio import writable_dir_problem

# Positions of the embedded tiny models (dpg.training.models.TINY_DEFAULTS, which imports torch; a test keeps them equal).
TINY_POSITIONS = 256
TINY_NAMES = ("tiny", "tiny-bpe", "tiny-char")
INT64 = 2**63
# transformers' attention implementations (a kernels-hub repo "org/name" is accepted too) and torch's device strings
ATTENTION = re.compile(r"(paged\|)?(eager|sdpa|flex_attention|flash_attention_[234])")
KERNEL_REPO = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|hpu|npu|mtia|meta)(:\d+)?")
SEED_LIMIT = 2**32  # numpy's seed range, which HF's set_seed feeds it to

# key: (lowest allowed, what it means) for fields whose lower bound config.validate does not already check
AT_LEAST = {
    "grpo.beta": (0, "the KL coefficient"),
    "grpo.epsilon": (0, "the PPO clip range"),
    "grpo.max_grad_norm": (0, "0 turns clipping off"),
    "logging.sample_completions": (0, "completions logged per step"),
    "logging.heatmap_every": (0, "0 = never"),
    "generator.pretrain_steps": (0, "0 = no pretraining"),
    "target.pretrain_steps": (0, "0 = no pretraining"),
    "seed": (0, "a seed"),
    "inner_sft.seed": (0, "a seed"),
}


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; undecodable bytes and syntax errors are ConfigErrors naming file:line:col."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}:{line}:{column}: not UTF-8 text (byte {data[err.start]:#04x})") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """yaml.safe_load with its error as one line `source:line:col: problem` (safe_load refuses python tags)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = " ".join(x for x in (err.context, err.problem) if x)
        raise ConfigError(f"{where}: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: {' '.join(str(err).split())}") from None


def check_values(cfg) -> None:
    """Numbers finite and within range, the models' position limits; run before config.validate's cross-checks."""
    for key, value in _leaves(dataclasses.asdict(cfg)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            raise ConfigError(f"{key}: {value} does not fit in 64 bits")
    for key, (low, meaning) in AT_LEAST.items():
        value = _get(cfg, key)
        if value < low:
            raise ConfigError(f"{key}: must be at least {low} ({meaning}), got {value}")
    if cfg.seed >= SEED_LIMIT:
        raise ConfigError(f"seed: must be below 2**32 = {SEED_LIMIT}, got {cfg.seed}")
    for role in ("generator", "target"):  # LM pretraining on the shipped corpus builds a tiny model and tokenizer
        spec = getattr(cfg, role)
        if spec.pretrain_steps and spec.name_or_path not in TINY_NAMES:
            raise ConfigError(f"{role}.pretrain_steps: only the embedded tiny {role}s {list(TINY_NAMES)} are "
                              f"pretrained here, not {spec.name_or_path!r} (got {spec.pretrain_steps})")
        if spec.pretrain_steps and spec.tokenizer not in (None, *TINY_NAMES):
            raise ConfigError(f"{role}.tokenizer: a pretrained tiny {role} uses a tiny tokenizer {list(TINY_NAMES)}, "
                              f"not {spec.tokenizer!r} ({role}.pretrain_steps is {spec.pretrain_steps})")
    for key in ("generator.name_or_path", "target.name_or_path", "prompts.field", "output_dir"):
        if not _get(cfg, key).strip():
            raise ConfigError(f"{key}: must not be empty, got {_get(cfg, key)!r}")
    g = cfg.grpo
    positions = model_positions(cfg.generator.name_or_path)
    if positions is not None and g.max_completion_length >= positions:
        raise ConfigError(f"grpo.max_completion_length: {g.max_completion_length} leaves no room for a prompt in "
                          f"the generator's {positions} positions")
    positions = model_positions(cfg.target.name_or_path)
    if positions is not None and cfg.inner_sft.max_length > positions:
        raise ConfigError(f"inner_sft.max_length: {cfg.inner_sft.max_length} is more than the target's {positions} "
                          "positions")
    for role in ("generator", "target"):
        attn = getattr(cfg, role).attn_implementation
        if attn is not None and not (ATTENTION.fullmatch(attn) or KERNEL_REPO.fullmatch(attn)):
            raise ConfigError(f"{role}.attn_implementation: unknown value {attn!r}; choose one of eager, sdpa, "
                              "flash_attention_2/3/4, flex_attention (optionally paged|...), or a kernels repo org/name")
    if not DEVICE.fullmatch(cfg.inner_sft.state_device):
        raise ConfigError(f"inner_sft.state_device: not a torch device, got {cfg.inner_sft.state_device!r} (e.g. cpu, "
                          "cuda, cuda:1)")
    state_dir = cfg.inner_sft.state_dir
    if state_dir is not None and not Path(state_dir).is_dir():
        raise ConfigError(f"inner_sft.state_dir: not an existing directory: {state_dir}")


def model_positions(name: str) -> int | None:
    """How many positions a model embeds, when it is known without loading it (tiny names, local HF dirs)."""
    if name in TINY_NAMES:
        return TINY_POSITIONS
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return None
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # loading the model will say what is wrong with it
    fields = fields.get("text_config", fields)
    return next((fields[k] for k in ("n_positions", "max_position_embeddings", "n_ctx") if isinstance(fields.get(k), int)),
                None)


def check_output_dir(output_dir: str) -> None:
    """`dpg train` will write here: it must be (or become) a directory on a writable filesystem."""
    why = writable_dir_problem(output_dir)
    if why is not None:
        raise ConfigError(f"output_dir: cannot write a run to {output_dir!r}: {why}")


def check_new_run(output_dir: str, overwrite: bool) -> None:
    """Where a new run goes: a writable directory not holding an earlier run, unless `overwrite` (then deleted)."""
    check_output_dir(output_dir)
    found = run_files(output_dir)
    if found and not overwrite:
        raise FileExistsError(f"output_dir: {output_dir} already holds a run ({', '.join(found)}); continue it with "
                              f"`dpg train --resume {output_dir}` or start it again with --overwrite")


def _leaves(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _leaves(v, f"{prefix.rstrip('.')}[{i}].")
    else:
        yield prefix.rstrip("."), node


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg
