"""`dpg calibrate`: the agreement table against exact leave-one-out, and the recommendation it reads from it."""

import json
import math
import subprocess
import sys


from dpg.tools.calibrate import Calibration, EstimatorAgreement, calibrate, recommend
from dpg.config.schema import load_config

SMALL = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=4",
         "grpo.max_completion_length=6", "grpo.micro_batch_size=8", "inner_sft.max_length=12",
         "inner_sft.dtype=float64"]


def fake(rho, cos, lgo=((2, 0.3, 1.0), (4, 0.6, 1.5))):
    est = [EstimatorAgreement("metagrad", (rho, 0.05), (rho, 0.05), (cos, 0.05), 1.0)]
    est += [EstimatorAgreement(f"leave_group_out:{g}", (0.1, 0.1), (0.1, 0.1), (c, 0.1), s) for g, c, s in lgo]
    return Calibration(2, 8, 3.0, est)


def test_recommendation_follows_the_measured_agreement():
    cfg = load_config("configs/quickstart.yaml")
    assert recommend(fake(0.8, 0.7), 0.5, cfg).startswith("metagrad agrees with leave-one-out at ρ = 0.80")
    low = recommend(fake(0.2, 0.7), 0.5, cfg)
    # the best gradient cosine per second: G = 4 (0.6 / 1.5 s) beats G = 2 (0.3 / 1.0 s)
    assert low.startswith("metagrad ρ = 0.20") and "reward.groups: 4" in low and "inner_sft.optimizer: sgd" in low
    assert "reward.estimator: loo" in recommend(fake(0.2, 0.1, lgo=()), 0.5, cfg)


def test_calibrate_measures_every_estimator_against_loo(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    cfg = load_config("configs/quickstart.yaml", SMALL)
    result = calibrate(cfg, batches=2, progress=lambda _: None)
    names = [e.name for e in result.estimators]
    assert names == ["metagrad", "first_order", "naive", "leave_group_out:2", "leave_group_out:4"]  # G < 8 examples
    for e in result.estimators:
        for mean, se in (e.pearson, e.gradient_cosine):
            assert -1 - 1e-9 <= mean <= 1 + 1e-9 and (math.isnan(se) or se >= 0)
        assert e.seconds > 0
    assert result.completions_per_batch == 8 and result.recommendation


def test_calibrate_command_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "cal.json"
    proc = subprocess.run([sys.executable, "-m", "dpg", "calibrate", "configs/quickstart.yaml", *SMALL,
                           "--batches", "1", "--out", str(out)], capture_output=True, text=True,
                          env={**__import__("os").environ, "DPG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "Spearman vs loo" in proc.stdout and "loo (reference)" in proc.stdout
    assert json.loads(out.read_text())["recommendation"] in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "dpg", "calibrate", "configs/quickstart.yaml", "--threshold", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--threshold" in bad.stderr
