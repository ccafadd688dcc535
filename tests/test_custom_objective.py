"""Your own objective, as documented, through the installed `dpg` command: `module:Name` found in the working
directory (a console script does not have it on sys.path) and `path/to/file.py:Name`; errors name objective.name."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpg import objectives
from dpg.cli import main

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
    for name in ("myobj:SayWord", "objs/say.py:SayWord"):
        out = run_dpg(["evaluate", config, *FAST, f"objective={{name: '{name}', token: 7}}", "--data", "d.jsonl"],
                      cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "say_word_prob" in out.stdout and "Φ" in out.stdout  # the custom objective's own proxy is reported


def test_a_missing_module_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["check", str(REPO / "configs/quickstart.yaml"), *FAST, "objective.name=nomodule:SayWord"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dpg check: error: objective.name: cannot import module 'nomodule'")
    assert f"in the working directory {tmp_path}" in err


@pytest.mark.parametrize("name, message", [
    ("l3_norm", r"objective.name: unknown objective 'l3_norm'; known: \["),
    ("missing/file.py:X", r"objective.name: no file 'missing/file.py' for objective 'missing/file.py:X'"),
    ("custom_objective_example:nope", r"objective.name: 'custom_objective_example' has no attribute 'nope'"),
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
