"""The quickstart config mutated field by field (wrong types, signs, nan/inf, huge, missing, unknown keys, broken
YAML): every mutation is a ConfigError of one line that starts with the field and shows the value; a few go through
the installed `dpg` command, which must exit 2 with that one line and leave output_dir untouched."""

import dataclasses
import subprocess
import sys
import types
import typing
from pathlib import Path
from typing import Literal

import pytest

from dpg.config.schema import ConfigError, DPGConfig, load_config

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs/quickstart.yaml"
DPG = Path(sys.executable).with_name("dpg")

# mutation (an override value, parsed as YAML) -> how the message shows it
SHOWN = {"x": "'x'", "-1": "-1", "-1.0": "-1", ".nan": "nan", ".inf": "inf", "-.inf": "-inf", "1e400": "inf",
         str(10**30): str(10**30), "2.5": "2.5", "maybe": "maybe", "3": "3", "[1, 2]": "[1, 2]", "bogus": "bogus",
         "null": "None"}


def fields(cls, prefix=""):
    """(dotted key, type, optional) of every leaf field, descending into sections (and optional ones: lora)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], prefix + f.name
        args = typing.get_args(tp)
        optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args
        inner = [a for a in args if a is not type(None)] if optional else [tp]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            yield from fields(inner[0], key + ".")
        else:
            yield key, inner[0] if len(inner) == 1 else tp, optional


def mutations(tp, optional):
    if tp is int:
        found = ["x", "-1", ".nan", str(10**30), "2.5"]
    elif tp is float:
        found = ["x", "-1.0", ".nan", ".inf", "-.inf", "1e400"]
    elif tp is bool:
        found = ["maybe", "3"]
    elif tp is str:
        found = ["[1, 2]"]
    elif typing.get_origin(tp) is Literal:
        found = ["bogus"]
    else:  # lists, tuples (betas), dicts (objective), unions of several types (grpo.bf16: bool or "auto")
        found = ["3"] if typing.get_origin(tp) in (list, tuple) else ["[1, 2]"]
    return found + ([] if optional else ["null"])


# target.lora is refused as a whole (LoRA is for the generator only), so its fields are not named one by one.
CASES = [(key, value) for key, tp, optional in fields(DPGConfig) if not key.startswith("target.lora")
         for value in mutations(tp, optional)]


def test_the_fuzz_covers_every_section():
    sections = {key.split(".")[0] for key, _ in CASES}
    assert sections == {f.name for f in dataclasses.fields(DPGConfig)}
    assert len(CASES) > 300


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_bad_value_is_a_one_line_error_naming_the_field_and_value(key, value):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, [f"{key}={value}"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(key.split("[")[0]), message
    assert SHOWN[value] in message, message


@pytest.mark.parametrize("section", ["generator", "target", "prompts", "inner_sft", "reward", "grpo", "logging",
                                     "checkpoint", "generator.lora"])
def test_unknown_keys_are_named(section):
    with pytest.raises(ConfigError, match=rf"^unknown key {section}\.bogus_key \(known in {section}: "):
        load_config(QUICKSTART, [f"{section}.bogus_key=1"])


@pytest.mark.parametrize("text, where", [
    ("grpo:\n\tsteps: 3\n", ":2:1: while scanning for the next token found character '\\t'"),
    ("grpo: {steps: 3\n", ":2:1: while parsing a flow mapping"),
    ("grpo:\n  steps: !!python/object/apply:os.system ['true']\n", ":2:10: could not determine a constructor for the "
                                                                   "tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("grpo:\n  steps: 3\n   temperature: 1\n", ":3:15: mapping values are not allowed here"),
])
def test_yaml_errors_are_file_line_col(tmp_path, text, where):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}{where}")


def test_yaml_errors_in_overrides_name_the_override():
    with pytest.raises(ConfigError, match=r"^override 'grpo.steps=\[1':1:3: .*expected ',' or '\]'"):
        load_config(QUICKSTART, ["grpo.steps=[1"])
    with pytest.raises(ConfigError, match=r"^override 'grpo.steps=!!python/name:os.system':1:1: could not determine"):
        load_config(QUICKSTART, ["grpo.steps=!!python/name:os.system"])


def test_a_non_utf8_config_names_the_file_line_and_column(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("grpo:\n  steps: 3\nobjective: {name: target_string, string: 'caf\xe9'}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"^{path}:3:46: not UTF-8 text \(byte 0xe9\)$"):
        load_config(path)


@pytest.mark.parametrize("override, message", [
    ("grpo.max_completion_length=256", "grpo.max_completion_length: 256 leaves no room for a prompt in the "
                                       "generator's 256 positions"),
    ("inner_sft.max_length=257", "inner_sft.max_length: 257 is more than the target's 256 positions"),
    ("seed=4294967296", "seed: must be in [0, 2**32) (numpy's seed range: HF's set_seed seeds numpy with it), got "
                        "4294967296"),
    ("generator.pretrain_steps=5", None),  # valid for a tiny generator
    ("generator.name_or_path=gpt2", "generator.pretrain_steps: only the embedded tiny generators"),
    ("inner_sft.state_dir=/no/such/dir", "inner_sft.state_dir: not an existing directory: /no/such/dir"),
    ("grpo.max_grad_norm=0", None),  # 0 turns clipping off
    ("grpo.loss_type=luspo", "grpo.loss_type: invalid value 'luspo'; choose one of ['dapo', 'grpo', 'dr_grpo', "),
    ("generator.attn_implementation=bogus", "generator.attn_implementation: unknown value 'bogus'; choose one of "),
    ("generator.attn_implementation=paged|sdpa", None),
    ("inner_sft.state_device=gpu0", "inner_sft.state_device: not a torch device, got 'gpu0'"),
    ("objective.weight=.inf", "objective.weight: must be a finite number, got inf"),  # no bound covers objectives
])
def test_values_checked_against_the_models_and_libraries(override, message):
    if message is None:
        load_config(QUICKSTART, [override])
        return
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, [override])
    assert str(err.value).startswith(message)


def run_dpg(*args, cwd=REPO):
    return subprocess.run([str(DPG), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, named", [
    (["grpo.learning_rate=inf"], "grpo.learning_rate: must be a finite number > 0 (the generator's learning rate), "
                                 "got inf"),
    (["grpo.beta=.nan"], "grpo.beta: must be a finite number >= 0 (the KL coefficient, 0 = none as in the paper), "
                         "got nan"),
    (["reward.std_eps_rel=nan"], "reward.std_eps_rel: must be a finite number > 0 (the advantages' std floor, relative "
                                 "to the rewards' spread), got nan"),
    (["grpo.loss_type=bogus"], "grpo.loss_type: invalid value 'bogus'"),
    ([f"seed={10**30}"], f"seed: {10**30} does not fit in 64 bits"),
    (["grpo.max_completion_length=100000"], "grpo.max_completion_length: 100000 leaves no room"),
    (["inner_sft.weight_decay=inf"], "inner_sft.weight_decay: must be a finite number >= 0 (AdamW's decoupled weight "
                                     "decay, 0 = none), got inf"),
])
def test_cli_refuses_bad_values_with_one_line_and_writes_nothing(tmp_path, args, named):
    out = tmp_path / "run"
    r = run_dpg("train", str(QUICKSTART), *args, f"output_dir={out}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"dpg train: error: {named}"), r.stderr
    assert not out.exists()


def test_cli_yaml_tag_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    config = tmp_path / "evil.yaml"
    config.write_text(f"grpo:\n  steps: !!python/object/apply:os.system ['touch {marker}']\n")
    r = run_dpg("train", str(config), f"output_dir={tmp_path / 'run'}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"dpg train: error: {config}:2:10: could not determine a constructor")
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_cli_output_dir_under_a_file_or_on_an_earlier_run(tmp_path):
    (tmp_path / "a_file").write_text("x")
    r = run_dpg("train", str(QUICKSTART), f"output_dir={tmp_path / 'a_file' / 'run'}")
    assert r.returncode == 2
    assert r.stderr.strip() == (f"dpg train: error: output_dir: cannot write a run to "
                                f"'{tmp_path / 'a_file' / 'run'}': {tmp_path / 'a_file'} is a file, not a directory")
    run = tmp_path / "old"
    (run / "checkpoint-3").mkdir(parents=True)
    (run / "log.jsonl").write_text('{"step": 1}\n')
    r = run_dpg("train", str(QUICKSTART), f"output_dir={run}")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"output_dir: {run} already holds a run (log.jsonl, checkpoint-3)" in r.stderr and "--overwrite" in r.stderr
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-3", "log.jsonl"]
