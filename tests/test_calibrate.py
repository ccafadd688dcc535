"""`dpg calibrate`: the agreement table against exact leave-one-out, the cost model, and the recommendation it reads
from them: ranked by fidelity, sure only when the leader is ahead by more than a standard error, cheapest on a tie."""

import json
import math
import os
import subprocess
import sys

from dpg.config.schema import load_config
from dpg.run.console import Console
from dpg.stats import mean_se
from dpg.tools.calibrate import Calibration, EstimatorAgreement, calibrate, cost, recommend

SMALL = ["generator.pretrain_steps=0", "grpo.prompts_per_step=2", "grpo.num_generations=4",
         "grpo.max_completion_length=6", "grpo.micro_batch_size=8", "inner_sft.max_length=12",
         "inner_sft.dtype=float64"]
CFG = load_config("configs/quickstart.yaml")  # AdamW inside: the fallback also suggests SGD


def measured(name, cosines, seconds=1.0, n=32):
    """An estimator as calibrate reports it, from its gradient cosine with loo on each batch."""
    return EstimatorAgreement(name, gradient_cosine=mean_se(cosines), spearman=(0.1, 0.1), pearson=(0.1, 0.1),
                              cost=cost(name, n), seconds=seconds, cosines=list(cosines))


def calibration(*estimators):
    return Calibration(len(estimators[0].cosines), 32, 3.0, list(estimators))


def test_the_cost_model_counts_sft_runs_from_the_definitions():
    assert cost("loo", 32) == 33 and cost("leave_group_out:4", 32) == 5 and cost("leave_group_out:8", 32) == 9
    assert cost("naive", 32) == 1 and cost("first_order", 32) == 1.3 and cost("metagrad", 32) == 3.5


def test_a_clear_leader_is_recommended_however_long_it_took_once():
    """G = 8 ahead of G = 4 on every batch: recommended, even though its one timing was 100 times slower."""
    g4 = measured("leave_group_out:4", [0.45, 0.47, 0.49, 0.47], seconds=0.1)
    g8 = measured("leave_group_out:8", [0.61, 0.63, 0.65, 0.63], seconds=10.0)
    mg = measured("metagrad", [0.2, 0.3, 0.25, 0.3])
    text = recommend(calibration(g4, g8, mg), 0.4, CFG)
    assert text.startswith("use reward.estimator: leave_group_out, reward.groups: 8: gradient cosine with loo 0.63")
    assert "ahead of the runner-up leave_group_out:4 by 0.16 ± 0.00, paired over 4 batches;" in text
    assert "≈ 9 SFT runs per reward (loo: 33)" in text


def test_a_leader_within_one_standard_error_ties_and_the_cheapest_of_the_tie_is_recommended():
    """The same means, but batches that disagree: G = 8 is not ahead of G = 4 by more than one standard error of
    the paired difference, so the cheaper G = 4 is recommended and the tie is said; metagrad, below the threshold,
    is not part of it."""
    g4 = measured("leave_group_out:4", [0.2, 0.74, 0.3, 0.64])
    g8 = measured("leave_group_out:8", [0.7, 0.4, 0.85, 0.57])
    mg = measured("metagrad", [0.2, 0.3, 0.25, 0.3])
    text = recommend(calibration(g4, g8, mg), 0.4, CFG)
    assert text.startswith("leave_group_out:4 (0.47 ± 0.13) ties with leave_group_out:8 on gradient cosine with loo")
    assert "use the cheapest, reward.estimator: leave_group_out, reward.groups: 4; ≈ 5 SFT runs" in text
    # ties are with the leader only: metagrad, cheaper still, is below the threshold
    assert "metagrad" not in text


def test_one_batch_has_no_standard_error_so_every_estimator_at_the_threshold_ties():
    text = recommend(calibration(measured("metagrad", [0.55]), measured("leave_group_out:4", [0.9])), 0.5, CFG)
    assert text.startswith("metagrad (0.55) ties with leave_group_out:4")
    assert "one batch gives no standard error" in text and "reward.estimator: metagrad;" in text


def test_the_only_estimator_at_the_threshold_is_recommended_with_its_uncertainty_said():
    """Measured on the quickstart (4 batches): G = 8 alone reaches 0.5, but G = 4 is within one standard error."""
    g8 = measured("leave_group_out:8", [0.68, 0.52, 0.79, 0.53])
    g4 = measured("leave_group_out:4", [0.70, 0.58, 0.78, -0.18])
    text = recommend(calibration(g4, g8, measured("metagrad", [-0.0, 0.72, 0.67, 0.41])), 0.5, CFG)
    assert text.startswith("use reward.estimator: leave_group_out, reward.groups: 8: gradient cosine with loo "
                           "0.63 ± 0.06, the only estimator at 0.5, though not clearly ahead of the runner-up "
                           "leave_group_out:4 (0.47 ± 0.22; the difference is 0.16 ± 0.18, paired over 4 batches, "
                           "within one standard error): more --batches would tell them apart")


def test_below_the_threshold_exact_leave_one_out_is_recommended():
    text = recommend(calibration(measured("metagrad", [0.2, 0.3]), measured("naive", [0.1, 0.0])), 0.5, CFG)
    assert text.startswith("no estimator reaches gradient cosine 0.5 with loo (the best, metagrad: 0.25 ± 0.05)")
    assert "reward.estimator: loo (33 SFT runs per reward)" in text and "inner_sft.optimizer: sgd" in text
    naive = recommend(calibration(measured("naive", [0.9, 0.92]), measured("metagrad", [0.2, 0.3])), 0.5, CFG)
    assert "reward.estimator: naive, reward.batching: inverse_groups, reward.advantages: batch" in naive


def test_the_table_is_ranked_by_fidelity_with_counted_runs():
    c = calibration(measured("metagrad", [0.2, 0.3]), measured("leave_group_out:4", [0.6, 0.7]),
                    measured("first_order", [math.nan, math.nan]))
    lines = c.table().splitlines()
    assert lines[0].split()[:3] == ["estimator", "grad", "cosine"] and "SFT runs" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == ["leave_group_out:4", "metagrad", "first_order", "loo"]
    assert lines[4].split()[-2] == "33"  # loo's N + 1 runs


def test_calibrate_measures_every_estimator_against_loo(tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.setenv("DPG_CACHE", str(tmp_path / "cache"))
    cfg = load_config("configs/quickstart.yaml", SMALL)
    result = calibrate(cfg, batches=2, console=Console("info", progress=False))
    names = [e.name for e in result.estimators]
    assert names == ["metagrad", "first_order", "naive", "leave_group_out:2", "leave_group_out:4"]  # G < 8 examples
    for e in result.estimators:
        for mean, se in (e.pearson, e.gradient_cosine):
            assert -1 - 1e-9 <= mean <= 1 + 1e-9 and (math.isnan(se) or se >= 0)
        assert e.seconds > 0 and len(e.cosines) == 2 and e.cost == cost(e.name, 8)
    assert result.completions_per_batch == 8 and result.recommendation
    out = capsys.readouterr().out.splitlines()
    # it talks before the models load, and once per batch with the time left
    assert out[0].startswith("dpg calibrate: 2 batches of 8 completions from the configured generator")
    assert out[1].startswith("objective target_string on the initial target: Φ ")
    assert out[2].startswith("batch 1/2: grad cosine metagrad ") and out[2].endswith(" s left")
    assert out[3].startswith("batch 2/2: ") and "left" not in out[3]


def test_calibrate_command_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "cal.json"
    proc = subprocess.run([sys.executable, "-m", "dpg", "calibrate", "configs/quickstart.yaml", *SMALL,
                           "--batches", "1", "--out", str(out)], capture_output=True, text=True,
                          env={**os.environ, "DPG_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "Spearman vs loo" in proc.stdout and "loo (reference)" in proc.stdout
    written = json.loads(out.read_text())
    assert written["recommendation"] in proc.stdout and written["estimators"][0]["cost"] == 3.5
    bad = subprocess.run([sys.executable, "-m", "dpg", "calibrate", "configs/quickstart.yaml", "--threshold", "2"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--threshold" in bad.stderr
