"""A config's values beyond their types: every number finite and within the bound declared beside its field
(`dpg.fields.bound`), lengths within the models' positions, names that exist, paths that exist or can be
written; and YAML errors as `file:line:col: message`. Torch-free, so a bad config is refused in well under a second,
before anything is imported or written. Each error is one line naming the key and the value
(`dpg.errors.ConfigError`, also importable from dpg.config.schema)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from dpg.fields import check_bounds
from dpg.config.names import OBJECTIVES, TINY_NAMES, TINY_POSITIONS
from dpg.engine.sft_config import DTYPES
from dpg.errors import ConfigError
from dpg.run.checkpoints import run_files
from dpg.run.fsio import writable_dir_problem

INT64 = 2**63
# transformers' attention implementations (a kernels-hub repo "org/name" is accepted too) and torch's device strings
ATTENTION = re.compile(r"(paged\|)?(eager|sdpa|flex_attention|flash_attention_[234])")
KERNEL_REPO = re.compile(r"[\w.-]+/[\w.-]+(:[\w.-]+)?")
DEVICE = re.compile(r"(cpu|cuda|mps|xpu|hpu|npu|mtia|meta)(:\d+)?")


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
    """Each value of a built config on its own; run before config.validate's rules across fields."""
    leaves = list(_leaves(dataclasses.asdict(cfg)))
    for key, value in leaves:  # before the bounds, which would call 10**30 merely too large
        if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            raise ConfigError(f"{key}: {value} does not fit in 64 bits")
    check_bounds(cfg)
    for key, value in leaves:  # what no bound covers: the objective's parameters, a graph budget of inf
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value}")
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
    for role in ("generator", "target"):
        dtype = getattr(cfg, role).dtype
        if dtype not in DTYPES:
            raise ConfigError(f"{role}.dtype: unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    lora = cfg.generator.lora
    if lora is not None and (not lora.target_modules or any(not m for m in lora.target_modules)):
        raise ConfigError(f"generator.lora.target_modules: expected module names or 'all-linear', got "
                          f"{lora.target_modules!r}")
    source = cfg.prompts.source
    if source != "builtin" and not Path(source).exists():
        raise ConfigError(f"prompts.source: file or directory not found: {source}")
    if not isinstance(cfg.objective.get("name"), str):
        raise ConfigError(f"objective.name: expected the name of an objective, got {cfg.objective.get('name')!r}")
    name = cfg.objective["name"]
    # Without ':' it is a built-in, or a name registered from Python, which imported dpg.objectives to register it.
    known = sys.modules["dpg.objectives"].names() if "dpg.objectives" in sys.modules else sorted(OBJECTIVES)
    if ":" not in name and name not in known:
        guess = "".join(f": did you mean {c!r}?" for c in difflib.get_close_matches(name, known, n=1))
        raise ConfigError(f"objective.name: unknown objective {name!r}{guess} (known: {known}, or "
                          "'package.module:callable' / 'path/to/file.py:callable' for your own)")
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
