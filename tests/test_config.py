"""Config loading: YAML + overrides, types, bounds declared beside the fields, cross-field checks; every error names
the key."""

import dataclasses
import math
import types
import typing
from pathlib import Path

import pytest
import torch

from dpg.fields import Bound, bound
from dpg.config.schema import ConfigError, DPGConfig, load_config
from dpg.engine.sft_config import InnerSFTConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grpo:\n  steps: 7\ninner_sft:\n  optimizer: sgd\n  lr: 1e-3\n  dtype: float64\n"
                    "objective:\n  name: weight_pattern\n  pattern: '67'\n")
    cfg = load_config(path, ["grpo.num_generations=2", "inner_sft.betas=[0.8, 0.9]", "output_dir=x"])
    assert cfg.grpo.steps == 7 and cfg.grpo.num_generations == 2 and cfg.output_dir == "x"
    assert cfg.inner_sft.lr == 1e-3 and cfg.inner_sft.torch_dtype == torch.float64 and cfg.inner_sft.betas == (0.8, 0.9)
    assert cfg.objective == {"name": "weight_pattern", "pattern": "67"}
    assert isinstance(load_config(), DPGConfig)


def test_round_trip_through_yaml(tmp_path):
    import yaml

    cfg = load_config(None, ["inner_sft.dtype=float64", "grpo.steps=3"])
    path = tmp_path / "saved.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path) == cfg


@pytest.mark.parametrize("override, message", [
    ("grpo.stepz=3", r"^unknown key grpo.stepz: did you mean 'grpo.steps'\? \(known in grpo: beta, bf16, epsilon, "),
    ("reward.estimater=loo", r"^unknown key reward.estimater: did you mean 'reward.estimator'\? \(known in reward: "),
    ("banana=1", r"^unknown key banana \(known in the top level: checkpoint, generator, grpo, inner_sft, logging, "
                 r"objective, output_dir, prompts, reward, seed, target\)$"),
    ("grpo.steps=three", r"grpo.steps: expected an integer, got 'three'"),
    ("grpo.steps=2.5", r"grpo.steps: expected an integer, got 2.5"),
    ("grpo.learning_rate=fast", r"grpo.learning_rate: expected a number, got 'fast'"),
    ("logging.wandb=maybe", r"logging.wandb: expected true or false, got 'maybe'"),
    ("reward.estimator=magic", r"reward.estimator: invalid value 'magic'; choose one of \['metagrad', 'naive', 'first_order', 'loo', 'leave_group_out', 'levenshtein', 'embedding', 'langid'\]"),
    ("inner_sft.optimizer=adam", r"inner_sft.optimizer: invalid value 'adam'"),
    ("reward.groups=4", r"reward.groups: set it exactly when reward.estimator is leave_group_out .*groups=4"),
    ("reward.estimator=leave_group_out", r"reward.groups: set it exactly when .* groups=None"),
    ("reward.compare_every=-1", r"^reward.compare_every: must be >= 0 \(steps between agreement checks, 0 = never\), "
                                r"got -1$"),
    ("inner_sft.lr=-0.01", r"^inner_sft.lr: must be > 0 \(the inner learning rate\), got -0.01$"),
    ("inner_sft.betas=[0.9, 1]", r"^inner_sft.betas\[1\]: must be in \[0, 1\) \(AdamW's moment decay rates\), "
                                 r"got 1.0$"),
    ("grpo.vllm_server_port=0", r"^grpo.vllm_server_port: must be in \[1, 65535\] \(server: a port number\), got 0$"),
    ("generator.lora={dropout: 1}", r"^generator.lora.dropout: must be in \[0, 1\) \(peft's lora_dropout, a "
                                    r"probability\), got 1.0$"),
    ("prompts.limit=0", r"^prompts.limit: must be >= 1 \(keep only the first `limit` prompts\), got 0$"),
    ("inner_sft.betas=[0.9]", r"inner_sft.betas: expected a list of 2 values"),
    ("grpo.micro_batch_size=5", r"grpo.micro_batch_size: 5 does not divide prompts_per_step × num_generations = 32"),
    ("grpo.num_generations=1", r"^grpo.num_generations: must be >= 2 \(completions per prompt: GRPO compares the "
                               r"completions of one prompt\), got 1$"),
    ("reward.estimator=naive", r"reward.batching: the naive estimator .* needs 'inverse_groups'"),
    ("prompts.source=/no/such/file.txt", r"prompts.source: file or directory not found: /no/such/file.txt"),
    ("grpo=3", r"grpo: expected a mapping, got 3"),
    ("objective.name=3", r"objective.name: expected the name of an objective, got 3"),
    ("target.dtype=float8", r"target.dtype: unknown dtype 'float8'"),
    ("grpo.steps", r"override 'grpo.steps': expected key=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_missing_file_and_bad_top_level(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="the top level must be a mapping"):
        load_config(bad)


def test_shipped_configs_load():
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert configs, "configs/ holds no YAML"
    for path in configs:
        load_config(path)


def numeric_fields(cls, prefix=""):
    """(dotted key, field) of every field that holds a number (alone, in a union, or in a tuple), sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple) else (tp,)
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if sections:
            yield from numeric_fields(sections[0], f"{prefix}{f.name}.")
        elif int in args or float in args:
            yield prefix + f.name, f


def test_every_numeric_field_declares_its_bound_and_reason():
    found = dict(numeric_fields(DPGConfig))
    assert len(found) > 40 and "inner_sft.betas" in found and "grpo.vllm_server_port" in found
    missing = [key for key, f in found.items() if not isinstance(f.metadata.get("bound"), Bound)]
    assert missing == []
    assert all(f.metadata["bound"].why for f in found.values())


@pytest.mark.parametrize("key, value", [("lr", -0.01), ("lr", math.inf), ("momentum", 1.0), ("microbatch_size", 0),
                                        ("microbatch_size", 2.5), ("optimizer", "adam"), ("eps", math.nan),
                                        ("recompute_segment", 0), ("graph_budget_mb", -1.0)])
def test_inner_sft_built_in_python_is_refused_as_in_yaml(key, value):
    """The engine API (InnerSFTConfig(...)) and a config file refuse a value with the same one-line message."""
    with pytest.raises(ConfigError) as python:
        InnerSFTConfig(**{key: value})
    with pytest.raises(ConfigError) as yaml:
        load_config(None, [f"inner_sft.{key}={value}"])
    assert str(python.value) == str(yaml.value) and str(value) in str(python.value)


def test_bound_rules():
    assert [Bound("[0, 1)", "p").admits(v) for v in (0, 0.5, 1, math.nan)] == [True, True, False, False]
    assert [Bound("(0, 1]", "p").admits(v) for v in (0, 1)] == [False, True]
    assert Bound("[0, inf]", "MB").admits(math.inf) and not Bound(">= 0", "MB").admits(math.inf)
    assert Bound("[0, 2**32)", "a seed").high == 2**32
    with pytest.raises(ConfigError, match=r"^x: must be a finite number >= 0 \(a weight\), got inf$"):
        Bound(">= 0", "a weight").check("x", math.inf)
    with pytest.raises(ConfigError, match=r"^x\[1\]: must be < 1 \(a rate\), got 2$"):
        Bound("< 1", "a rate").check("x", (0.5, 2))
    with pytest.raises(ValueError, match="cannot read the rule 'positive'"):  # refused where it is declared
        bound(1, "positive", "a count")


def test_low_precision_opt_in_is_a_config_key():
    quickstart = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
    cfg = load_config(quickstart, ["inner_sft.dtype=float16", "inner_sft.allow_low_precision=true"])
    assert cfg.inner_sft.dtype == "float16" and cfg.inner_sft.allow_low_precision is True
    with pytest.raises(ConfigError, match="inner_sft.allow_low_precision"):
        load_config(quickstart, ["inner_sft.allow_low_precision=maybe"])
