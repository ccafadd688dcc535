"""The Python API (dpg.train / generate / evaluate / plot), evaluations with repeats, and the CLI as a layer over it."""

import json
import math
import statistics

import pytest
from datasets import load_from_disk

import dpg
from dpg.cli import main
from dpg.config.schema import ConfigError, GRPOSection, ModelSpec, PromptsConfig
from dpg.tools.evaluation import Estimate
from dpg.run.checkpoints import read_log

FAST = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=2", "grpo.micro_batch_size=2",
        "grpo.max_completion_length=8", "inner_sft.microbatch_size=2", "inner_sft.max_length=16", "inner_sft.lr=1e-2",
        "prompts.limit=16"]


def python_config(out) -> dpg.DPGConfig:
    """The quickstart at test size, written as Python instead of YAML."""
    return dpg.DPGConfig(
        generator=ModelSpec(pretrain_steps=0), prompts=PromptsConfig(limit=16),
        objective={"name": "target_string", "string": " the river"},
        inner_sft=dpg.InnerSFTConfig(lr=1e-2, microbatch_size=2, max_length=16),
        grpo=GRPOSection(steps=2, prompts_per_step=2, num_generations=2, micro_batch_size=2, max_completion_length=8),
        logging={"progress": False}, output_dir=str(out))  # a section may also be a mapping


def test_estimate_mean_and_standard_error():
    e = Estimate([1.0, 2.0, 4.0])
    assert e.mean == pytest.approx(7 / 3)
    assert e.se == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]) / math.sqrt(3))
    assert Estimate([5.0]).se is None and f"{Estimate([5.0])}" == "5"  # one repeat: no error bar, not a zero one
    assert f"{e:.3f}" == f"2.333 ± {e.se:.2g}"


def test_a_python_config_is_checked_like_a_yaml_file(tmp_path):
    cfg = python_config(tmp_path / "run")
    cfg.grpo.micro_batch_size = 3
    with pytest.raises(ConfigError, match=r"grpo.micro_batch_size: 3 does not divide"):
        dpg.train(cfg)
    with pytest.raises(ConfigError, match=r"unknown key grpo.stepz"):
        dpg.train(dpg.DPGConfig(grpo={"stepz": 1}))
    assert not (tmp_path / "run").exists()  # nothing written for a bad config


def test_train_evaluate_plot_from_python(tmp_path, capsys):
    run = dpg.train(python_config(tmp_path / "run"), verbosity="quiet")
    assert run == tmp_path / "run" and [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2]
    assert (run / "final/model.safetensors").is_file()
    assert capsys.readouterr().out.startswith("done: 2 steps")  # quiet: the summary line only

    cfg = dpg.DPGConfig.from_yaml("configs/quickstart.yaml", FAST)
    final = str(run / "final")
    result = dpg.evaluate(cfg, generators=["initial", final], n=4, repeats=3, verbosity="quiet")
    assert isinstance(result, dpg.Evaluation) and [s.name for s in result.sources] == ["initial", final]
    initial = result["initial"]
    assert len(set(initial.phi.values)) == 3  # fresh samples and shuffles in every repeat
    assert initial.phi.se == pytest.approx(statistics.stdev(initial.phi.values) / math.sqrt(3))
    diff = result.difference(final, "initial")  # paired: repeat by repeat
    assert diff.phi.values == [b - a for a, b in zip(initial.phi.values, result[final].phi.values)]
    assert [d.source for d in result.differences()] == [final]
    table = str(result)
    assert "mean ± s.e. over 3 repeats" in table and f"{final} − initial" in table and " ± " in table
    saved = json.loads(json.dumps(result.to_dict()))
    assert saved["differences"][0]["phi"]["values"] == diff.phi.values and saved["repeats"] == 3

    once = dpg.evaluate(cfg, generators=["initial"], n=4, verbosity="quiet")  # one repeat = the first of three
    assert once["initial"].phi.values == initial.phi.values[:1] and once["initial"].phi.se is None
    assert "1 repeat: no error bar" in str(once)

    png = dpg.plot(run)
    assert png == run / "curves.png" and png.stat().st_size > 10_000


def test_cli_evaluate_is_the_api_and_generate_writes_hf_datasets(tmp_path, capsys):
    args = ["configs/quickstart.yaml", *FAST]
    assert main(["generate", *args, "-n", "5", "--out", str(tmp_path / "d.jsonl")]) == 0
    assert main(["generate", *args, "-n", "5", "--out", str(tmp_path / "d_hf"), "--format", "hf"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert load_from_disk(str(tmp_path / "d_hf")).to_list() == rows  # same sample, two formats
    assert main(["generate", *args, "-n", "5", "--out", str(tmp_path / "d_hf"), "--format", "hf"]) == 2
    assert "--out: " in capsys.readouterr().err  # an existing directory is never overwritten

    assert main(["evaluate", *args, "--data", str(tmp_path / "d_hf"), str(tmp_path / "d.jsonl"), "--repeats", "2",
                 "--out", str(tmp_path / "e.json")]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "e.json").read_text())
    api = dpg.evaluate(dpg.DPGConfig.from_yaml(*args[:1], FAST), data=[tmp_path / "d_hf", tmp_path / "d.jsonl"],
                       repeats=2, verbosity="quiet")
    assert saved == json.loads(json.dumps(api.to_dict())) and str(api) in printed
    hf, jsonl = saved["sources"]
    assert hf["phi"]["values"] == jsonl["phi"]["values"]  # the same texts, the same shuffles: the same Φ
    assert saved["differences"][0]["phi"]["values"] == [0.0, 0.0]
    assert hf["phi"]["values"][0] != hf["phi"]["values"][1]  # a data file's repeats differ by their SFT shuffle


def test_public_api_names_are_stable_and_import_dpg_stays_torch_free():
    """The names users import from `dpg` survive any reorganisation of the package behind them."""
    import subprocess
    import sys

    expected = {"CheckResult", "DPGConfig", "Evaluation", "InnerSFTConfig", "MetagradEngine", "MetagradResult",
                "attribute", "check", "evaluate", "generate", "load_config", "plot", "select", "train"}
    assert set(dpg.__all__) == expected
    code = "import sys, dpg; assert 'torch' not in sys.modules, 'import dpg loaded torch'; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
    from dpg import InnerSFTConfig, MetagradEngine  # noqa: F401  (the lazy engine names resolve)
    from dpg.engine.metagrad import MetagradEngine as engine_class

    assert dpg.MetagradEngine is engine_class
    assert callable(dpg.train) and callable(dpg.evaluate) and callable(dpg.attribute)
