"""Config loading: YAML + overrides, types, cross-field checks; every error names the key."""

from pathlib import Path

import pytest
import torch

from dpg.config.schema import ConfigError, DPGConfig, load_config

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
    ("grpo.stepz=3", r"unknown key grpo.stepz \(known in grpo: "),
    ("banana=1", r"unknown key banana"),
    ("grpo.steps=three", r"grpo.steps: expected an integer, got 'three'"),
    ("grpo.steps=2.5", r"grpo.steps: expected an integer, got 2.5"),
    ("grpo.learning_rate=fast", r"grpo.learning_rate: expected a number, got 'fast'"),
    ("logging.wandb=maybe", r"logging.wandb: expected true or false, got 'maybe'"),
    ("reward.estimator=magic", r"reward.estimator: invalid value 'magic'; choose one of \['metagrad', 'naive', 'first_order', 'loo', 'leave_group_out', 'levenshtein', 'embedding', 'langid'\]"),
    ("inner_sft.optimizer=adam", r"inner_sft.optimizer: invalid value 'adam'"),
    ("reward.groups=4", r"reward.groups: set it exactly when reward.estimator is leave_group_out .*groups=4"),
    ("reward.estimator=leave_group_out", r"reward.groups: set it exactly when .* groups=None"),
    ("reward.compare_every=-1", r"reward.compare_every: must be ≥ 0, got -1"),
    ("inner_sft.betas=[0.9]", r"inner_sft.betas: expected a list of 2 values"),
    ("grpo.micro_batch_size=5", r"grpo.micro_batch_size: 5 does not divide prompts_per_step × num_generations = 32"),
    ("grpo.num_generations=1", r"grpo.num_generations: .* needs ≥ 2, got 1"),
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
