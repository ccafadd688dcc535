"""Your own objective, as documented, through the installed `dpg` command: `module:Name` found in the working
directory (a console script does not have it on sys.path) and `path/to/file.py:Name`; switching objectives from the
command line; errors name objective.name (with a guess where one is close), and an objective that cannot serve is
refused before anything is written or generated."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpg import objectives
from dpg.cli import main
from dpg.config.schema import load_config
from test_cli_startup import probe

REPO = Path(__file__).resolve().parents[1]
DPG = Path(sys.executable).parent / "dpg"  # the console script `pip install -e .` put beside this interpreter
FAST = ["generator.pretrain_steps=0", "inner_sft.microbatch_size=2", "inner_sft.max_length=16", "inner_sft.lr=1e-2",
        "prompts.limit=16"]

SAY_WORD = '''
import torch
from torch.func import functional_call


class SayWord:
    """Φ = log-probability the target gives token `token` right after its first token: data that makes it say it."""

    def __init__(self, token: int = 5):
        self.token = token

    def __call__(self, model, params):
        logits = functional_call(model, params, (), {"input_ids": torch.tensor([[0]])}).logits
        return torch.log_softmax(logits[0, -1], dim=-1)[self.token]

    def proxies(self, model, params):
        with torch.no_grad():
            return {"say_word_prob": float(self(model, params).exp())}
'''


def run_dpg(args, cwd):
    assert DPG.is_file(), f"the dpg console script is not installed at {DPG}"
    return subprocess.run([str(DPG), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_module_and_file_objectives_through_the_installed_command(tmp_path):
    (tmp_path / "myobj.py").write_text(SAY_WORD)
    (tmp_path / "objs").mkdir()
    (tmp_path / "objs" / "say.py").write_text(SAY_WORD)
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"completion": t}) + "\n"
                                              for t in ("the river", "a boat on the sea", "the sea", "hello")))
    config = str(REPO / "configs/quickstart.yaml")
    # the whole section, and objective.name with a parameter: the quickstart's `string` goes with its objective
    for objective in (["objective={name: 'myobj:SayWord', token: 7}"],
                      ["objective.name=objs/say.py:SayWord", "objective.token=7"]):
        out = run_dpg(["evaluate", config, *FAST, *objective, "--data", "d.jsonl"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "say_word_prob" in out.stdout and "Φ" in out.stdout  # the custom objective's own proxy is reported


def test_a_missing_module_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(REPO / "configs/quickstart.yaml"), *FAST, "objective.name=nomodule:SayWord"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpg check: error: objective.name: cannot import module 'nomodule'")
    assert f"in the working directory {tmp_path}" in err


@pytest.mark.parametrize("name, message", [
    ("l3_norm", r"objective.name: unknown objective 'l3_norm': did you mean 'l2_norm'\? \(known: \["),
    ("missing/file.py:X", r"objective.name: no file 'missing/file.py' for objective 'missing/file.py:X'"),
    ("custom_objective_example:nope", r"objective.name: 'custom_objective_example' has no attribute 'nope'"),
    ("custom_objective_example:mean_haed", r"has no attribute 'mean_haed': did you mean 'mean_head'\?"),
])
def test_bad_objective_names_say_objective_name(name, message, capsys):
    assert main(["check", "configs/quickstart.yaml", *FAST, f"objective.name={name}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err


def test_file_objective_from_python(tmp_path, monkeypatch):
    (tmp_path / "say.py").write_text(SAY_WORD)
    monkeypatch.chdir(tmp_path)
    objective = objectives.from_config({"name": "say.py:SayWord", "token": 3})
    assert type(objective).__name__ == "SayWord" and objective.token == 3
    # the same file is one module, loaded once
    assert type(objectives.get(str(tmp_path / "say.py") + ":SayWord")) is type(objective)


def test_changing_objective_name_drops_the_old_objectives_parameters():
    """The quickstart's objective is target_string with a `string`: naming another objective on the command line
    drops it, and keeps only the objective keys typed there (in any order); the same name keeps the file's keys."""
    quickstart = "configs/quickstart.yaml"
    assert load_config(quickstart, ["objective.name=l2_norm"]).objective == {"name": "l2_norm"}
    assert load_config(quickstart, ["objective.token=7", "objective.name=my.py:Say"]).objective == \
        {"name": "my.py:Say", "token": 7}
    assert load_config(quickstart, ["objective.name=target_string", "objective.prompt=a"]).objective == \
        {"name": "target_string", "string": " the river", "prompt": "a"}
    assert load_config(quickstart, ["objective={name: text_loss, texts: [a]}"]).objective == \
        {"name": "text_loss", "texts": ["a"]}


def test_a_misspelt_built_in_name_is_refused_before_torch_is_imported():
    result, err = probe(["train", "configs/quickstart.yaml", "objective.name=target_strng"])
    assert result == {"code": 2, "imported": []}
    assert err.startswith("dpg train: error: objective.name: unknown objective 'target_strng': did you mean "
                          "'target_string'? (known: ['l2_norm', 'target_string', 'text_loss', 'weight_pattern'], or ")


def test_a_misspelt_parameter_is_named_with_its_closest_match(capsys):
    assert main(["check", "configs/quickstart.yaml", *FAST, "objective.strng=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("dpg check: error: objective.strng: objective 'target_string' has no parameter 'strng': did you "
                   "mean 'string'? (accepted: ['string', 'prompt', 'tokenizer', 'tokenizer_path'])")


BAD = '''
import torch


def vector(model, params):
    return params["lm_head.weight"][0, :3]


def nan(model, params):
    return params["lm_head.weight"].sum() * float("nan")


def own_weights(model, params):
    return model.lm_head.weight.sum()


def number(model, params):
    return params["lm_head.weight"].sum().item()


def nan_gradient(model, params):
    return (params["lm_head.weight"] * 0).pow(2).sum().sqrt()  # 0, with the gradient 0 · ∞
'''


@pytest.mark.parametrize("name, says", [
    ("vector", "returned a tensor of shape (3,) at the target's initial weights; an objective returns a scalar tensor"),
    ("nan", "returned Φ = nan at the target's initial weights; Φ must be finite there"),
    ("own_weights", "which does not depend on `params` (no gradient): compute it from `params`"),
    ("number", "returned float "),
    ("nan_gradient", "has a gradient that is not finite at the target's initial weights"),
])
def test_an_objective_that_cannot_serve_stops_train_before_anything_is_written(tmp_path, monkeypatch, capsys,
                                                                               name, says):
    """Tried once on the initial target, before the generator loads (here it does not even exist) and before the
    run directory is written: one line naming objective.name and what it returned."""
    (tmp_path / "bad.py").write_text(BAD)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    code = main(["train", str(REPO / "configs/quickstart.yaml"), *FAST, f"output_dir={run}",
                 f"generator.name_or_path={tmp_path / 'no_generator'}", f"objective={{name: 'bad.py:{name}'}}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"dpg train: error: objective.name: 'bad.py:{name}' ") and says in err[0], err[0]
    assert not run.exists()
