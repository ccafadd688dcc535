"""The paper regime's protocol code: the inner-lr rule of experiments/oneoff/lr_sweep.py and the batch estimate of
experiments/oneoff/step_timing.py, on made-up numbers, and the picture ceiling of experiments/oneoff/picture_ceiling.py
(no model is trained here)."""

import math

import numpy as np
import pytest

from experiments.oneoff import lr_sweep, picture_ceiling, step_timing


def sweep(losses: dict[str, list[float]]) -> dict:
    """One seed's sweep record with the given held-out losses per optimizer (Φ finite and 0 everywhere)."""
    return {"sweep": {opt: [{"lr": lr, "heldout_loss": loss, "train_loss": 1.0,
                             "delta_phi": {s: 0.0 for s in lr_sweep.STUDIES}} for lr, loss in zip(grid, losses[opt])]
                      for opt, grid in lr_sweep.GRIDS.items()}}


def bowl(n: int, low: int) -> list[float]:
    return [3.0 + (i - low) ** 2 for i in range(n)]


def test_the_rule_takes_the_lowest_mean_held_out_loss_and_skips_diverged_lrs():
    n = {opt: len(grid) for opt, grid in lr_sweep.GRIDS.items()}
    seeds = [sweep({"adamw": bowl(n["adamw"], 5), "sgd": bowl(n["sgd"], 4)}),
             sweep({"adamw": bowl(n["adamw"], 7), "sgd": bowl(n["sgd"], 4)})]
    chosen, table = lr_sweep.choose(seeds)
    assert chosen["adamw"] == lr_sweep.GRIDS["adamw"][6]  # the mean over seeds is lowest between the two minima
    assert chosen["sgd"] == lr_sweep.GRIDS["sgd"][4]
    assert table["adamw"][6]["heldout_loss"] == pytest.approx(4.0)

    seeds[1]["sweep"]["sgd"][4]["heldout_loss"] = math.inf  # one seed diverges at the best lr: that lr is out
    chosen, table = lr_sweep.choose(seeds)
    assert chosen["sgd"] in (lr_sweep.GRIDS["sgd"][3], lr_sweep.GRIDS["sgd"][5]) and not table["sgd"][4]["finite"]


def test_the_rule_refuses_a_minimum_at_the_edge_of_the_grid():
    n = {opt: len(grid) for opt, grid in lr_sweep.GRIDS.items()}
    with pytest.raises(SystemExit, match="adamw: the lowest held-out loss is at the edge of the grid"):
        lr_sweep.choose([sweep({"adamw": bowl(n["adamw"], n["adamw"] - 1), "sgd": bowl(n["sgd"], 4)})])


def test_the_estimate_prices_every_planned_run(monkeypatch):
    rows = [{"point": "bs64_m1", "study": "l2_norm", "arm": "dpg_adamw", "seconds": {"total": 2.0}},
            {"point": "bs64_m1", "study": "language", "arm": "dpg_adamw", "seconds": {"total": 4.0}}]
    monkeypatch.setattr(step_timing, "PLAN", [("bs64_m1", "uuid", "control"), ("bs64_m1", "language", "dpg_adamw")])
    out = step_timing.estimate(rows, {"bs64_m1": 10.0})
    steps = step_timing.point_steps("bs64_m1")  # control is priced as l2_norm's dpg_adamw; language by its own row
    expected = step_timing.SEEDS * ((steps * 2.0 + 50) + (steps * 4.0 + 50)) / 3600
    assert out["runs"] == 2 * step_timing.SEEDS and out["hours"] == pytest.approx(expected)
    monkeypatch.setattr(step_timing, "PLAN", [("bs64_m1", "uuid", "loo")])
    with pytest.raises(SystemExit, match="no measured step for loo at bs64_m1"):
        step_timing.estimate(rows, {"bs64_m1": 10.0})


def test_picture_ceiling_counts_one_shared_sign_per_row_over_the_absent_columns():
    picture = np.array([[1, 1, -1, 1],
                        [-1, 1, -1, -1]])
    # columns 2 and 3 absent: row 0 can match one of (-1, 1), row 1 both of (-1, -1); columns 0-1 are free
    assert picture_ceiling.ceiling(picture, [2, 3]) == (1 + 2 + 2 * 2) / 8
    assert picture_ceiling.ceiling(picture, []) == 1.0
    from dpg.objectives.weights import load_pattern
    # the ceiling docs/results_archive.md reports for the "67" patch
    assert picture_ceiling.ceiling(load_pattern("67"), [1, 2, 3, 4, 5, 6]) == 28 / 42


def test_absent_columns_are_the_patch_tokens_the_pretraining_text_lacks_except_eos():
    from collections import Counter
    counts = Counter({3: 5, 4: 1, 7: 2})
    assert picture_ceiling.absent_columns(4, 2, counts, eos_id=5) == [0]  # ids 2..5: 3, 4 occur, 5 is EOS
    assert picture_ceiling.absent_columns(3, 0, counts, eos_id=0) == [1, 2]
