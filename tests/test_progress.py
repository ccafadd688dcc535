"""Long verbs talk: a first-run pretraining says how long it will take, `evaluate` says what it will run and how
much is left after each repeat; -q (quiet) prints none of it. (Bars are drawn on a terminal only: not here.)"""

import json

from dpg import api
from dpg.config.schema import load_config
from dpg.run.console import Console
from dpg.training.models import pretrained_tiny_model
from test_trainer import FAST


def test_pretraining_says_how_long_it_will_take_once(tmp_path, capsys, one_thread):
    path = pretrained_tiny_model(tmp_path, role="target", steps=30, console=Console("info", progress=False))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("pretraining the tiny target on the shipped corpus: 30 steps, about ")
    assert out[0].endswith(f" s left (once: it is cached in {path})")
    assert pretrained_tiny_model(tmp_path, role="target", steps=30, console=Console("info")) == path  # cached: silent
    pretrained_tiny_model(tmp_path / "quiet", role="target", steps=30, console=Console("quiet"))
    assert capsys.readouterr().out == ""


def test_evaluate_says_what_it_runs_and_the_time_left_after_each_repeat(tmp_path, capsys, one_thread):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"completion": t}) + "\n" for t in ("the river", "a boat", "the sea", "hi")))
    cfg = load_config("configs/quickstart.yaml", FAST)
    result = api.evaluate(cfg, data=[data], repeats=3)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "dpg evaluate: 3 fresh SFT runs of the target (sources × repeats: 1 × 3)"
    assert out[1].startswith("objective target_string on the initial target: Φ ")
    values = [f"{v:.4f}" for v in result[str(data)].phi.values]
    assert out[2].startswith(f"repeat 1/3: Φ {data} {values[0]}; about ") and out[2].endswith(" s left")
    assert out[3].startswith(f"repeat 2/3: Φ {data} {values[1]}; about ")
    assert out[4] == f"repeat 3/3: Φ {data} {values[2]}" and len(out) == 5
    api.evaluate(cfg, data=[data], repeats=2, verbosity="quiet")
    assert capsys.readouterr().out == ""
