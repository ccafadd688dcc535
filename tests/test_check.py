"""`dpg.check`: the engine's metagradients against finite differences, from Python, as `dpg check` prints them."""

import math

import pytest

import dpg
from dpg.cli import main
from dpg.tools.check import WeightCheck

FAST = ["generator.pretrain_steps=0", "inner_sft.microbatch_size=2", "inner_sft.max_length=16", "prompts.limit=16"]
SGD = ["inner_sft.optimizer=sgd", "inner_sft.lr=0.5"]


@pytest.fixture(scope="module")
def result():
    return dpg.check(dpg.DPGConfig.from_yaml("configs/quickstart.yaml", [*FAST, *SGD]), weights=3)


def test_metagradients_match_finite_differences(result):
    assert isinstance(result, dpg.CheckResult) and result.h == 1e-4  # SGD's default step
    assert [w.index for w in result.weights] == [0, 2, 3]  # evenly over 2 inner steps' worth of examples
    for w in result.weights:
        assert w.metagrad == pytest.approx(w.finite_difference, rel=1e-5)
        assert w.relative_error < 1e-5
    assert result.max_relative_error == max(w.relative_error for w in result.weights) < 1e-5
    assert result.passed and result.inner_steps == 2 and result.examples == 4


def test_the_table_is_what_dpg_check_prints(result, capsys):
    assert main(["check", "configs/quickstart.yaml", *FAST, *SGD, "--weights", "3"]) == 0
    assert capsys.readouterr().out == f"{result}\n"
    lines = str(result).splitlines()
    assert lines[0] == "2 inner steps, 4 examples, float64, central differences with h = 0.0001"
    assert lines[-1].startswith("max relative error: ") and lines[-1].endswith("(OK, tolerance 0.0001)")


def test_a_zero_tolerance_fails_and_the_cli_exits_1(capsys):
    cfg = dpg.DPGConfig.from_yaml("configs/quickstart.yaml", FAST)
    result = dpg.check(cfg, n=2, weights=1, tol=0)
    assert result.max_relative_error > 0 and not result.passed
    assert str(result).endswith("(FAILED, tolerance 0)")
    assert main(["check", "configs/quickstart.yaml", *FAST, "-n", "2", "--weights", "1", "--tol", "1e-300"]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_non_finite_difference_fails_the_check():
    bad = dpg.CheckResult([WeightCheck(0, 1.0, math.nan), WeightCheck(1, 1.0, 1.0)], examples=2, inner_steps=1, h=1e-6,
                          tol=1.0)
    assert math.isnan(bad.max_relative_error) and not bad.passed


@pytest.mark.parametrize("kwargs, message", [
    ({"n": -1}, "n: must be an integer ≥ 0, got -1"),
    ({"weights": 0}, "weights: must be an integer ≥ 1, got 0"),
    ({"h": 0.0}, "h: must be a finite number > 0, got 0.0"),
    ({"tol": math.inf}, "tol: must be a finite number ≥ 0, got inf"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        dpg.check(dpg.DPGConfig.from_yaml("configs/quickstart.yaml", FAST), **kwargs)
