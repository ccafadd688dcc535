"""`dpg plot`: which panels a log gets, the layout, overlaid runs, and the errors (on logs written here: no training)."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from dpg.cli import main
from dpg.run import plotting
from dpg.run.checkpoints import RunDirError, read_log, reconcile_log


def make_run(path, steps=40, per_step=(8, 4), phi0=-6.0, failed_step=None):
    """A run directory as `dpg train` leaves it: config.yaml and one log.jsonl record per step."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({
        "grpo": {"prompts_per_step": per_step[0], "num_generations": per_step[1]},
        "logging": {"collapse_distinct_2": 0.2}}))
    rows = []
    for step in range(1, steps + 1):
        if step == failed_step:
            rows.append({"step": step, "reward_failed": "boom"})
            continue
        phi = phi0 + 0.05 * step + 0.1 * (-1) ** step
        rows.append({"step": step, "phi": phi,
                     "proxies": {"loss": -phi, "token_accuracy": step / steps, "exact_match": 0.0},
                     "advantage_scaling": {"raw_std": 1e-2, "eps_floor": 1e-5},
                     "text": {"distinct_1": 0.5, "distinct_2": 1 - step / steps, "repetition": step / steps / 2,
                              "mean_words": 10 + step % 3, "empty": 0.1},
                     "seconds": {"generation": 0.2, "reward": 0.3, "policy_update": 0.25, "total": 0.75}})
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_panels_hide_constant_proxies_and_the_loss_that_is_minus_phi(tmp_path):
    run = plotting.load_run(make_run(tmp_path / "run", failed_step=7))
    assert len(run.rows) == 39  # the failed step has no Φ: left out, not drawn as 0
    assert [title for title, _, _ in plotting.panels([run])] == [
        "Φ (higher is better)", "proxy: token_accuracy", "reward scale: raw std vs advantage eps",
        "completions: distinct-2, repetition", "completions: mean length (words)", "seconds per step"]


def test_one_run_is_a_screen_sized_grid_with_steps_and_examples(tmp_path):
    run_dir = make_run(tmp_path / "run")
    assert main(["plot", str(run_dir)]) == 0
    width, height = Image.open(run_dir / "curves.png").size
    assert width <= 1920 and height <= 1080 and width / height < 3  # a grid, not one long row
    fig = plotting.figure([plotting.load_run(run_dir)])
    phi_axes = fig.axes[0]
    assert phi_axes.get_xlabel() == "GRPO step" and phi_axes.get_title() == "Φ (higher is better)"
    assert len(phi_axes.get_lines()) == 2  # every step (faint) and the moving average
    top = [child for child in phi_axes.child_axes if child.get_xlabel() == "examples seen"]
    assert len(top) == 1  # the examples axis: 32 completions per step


def test_several_runs_overlay_with_a_legend(tmp_path, capsys):
    a = make_run(tmp_path / "arms/metagrad", phi0=-6.0)
    b = make_run(tmp_path / "arms/naive", phi0=-6.5)
    assert main(["plot", str(a), str(b)]) == 0
    assert (tmp_path / "arms/compare.png").is_file()
    out = capsys.readouterr().out
    assert f"{a}: Φ -6.05 (step 1) → -3.9 (step 40)" in out
    fig = plotting.figure([plotting.load_run(a), plotting.load_run(b)])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["metagrad", "naive"]
    c = make_run(tmp_path / "arms/small_batches", per_step=(2, 4))  # other batch sizes: compare at equal data
    fig = plotting.figure([plotting.load_run(a), plotting.load_run(c)])
    assert fig.axes[0].get_xlabel() == "examples seen (completions)"
    assert max(fig.axes[0].get_lines()[0].get_xdata()) == 40 * 32


def test_smooth_is_a_centred_moving_average():
    assert plotting.smooth([0, 3, 6, 9, 12], 3) == [1.5, 3, 6, 9, 10.5]


def test_plot_errors_name_the_directory(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"dpg plot: error: {tmp_path}: not a run directory (no log.jsonl; "
                                       "`dpg train` writes one)\n")
    (tmp_path / "log.jsonl").write_text('{"step": 1, "reward_failed": "boom"}\n')
    assert main(["plot", str(tmp_path)]) == 2
    assert "log.jsonl has no scored steps yet" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least one run directory"):
        plotting.plot([])


def test_step_axes_have_integer_ticks_and_no_panel_is_empty(tmp_path):
    run_dir = make_run(tmp_path / "run", steps=3)
    log = run_dir / "log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    for row in rows:  # one-word completions: distinct-2 and repetition are undefined at every step
        row["text"].update(distinct_2=None, repetition=None)
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plotting.figure([plotting.load_run(run_dir)])
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert "completions: distinct-2, repetition" not in [ax.get_title() for ax in shown]  # no panel of nothing
    assert len(shown) == 5 and all(any(np.isfinite(line.get_ydata()).any() for line in ax.get_lines())
                                   for ax in shown)
    for ax in shown:  # three steps: ticks at 1, 2, 3 (and whole examples on top), never at 1.5
        for axis in (ax, *ax.child_axes):
            ticks = axis.xaxis.get_majorticklocs()
            assert len(ticks) and all(t == int(t) for t in ticks), (ax.get_title(), ticks)
    assert sum(ax.get_visible() for ax in fig.axes if not ax.get_title()) == 0  # the grid's spare slot is hidden


def test_a_torn_line_inside_the_log_is_left_out_with_a_warning(tmp_path, capsys):
    run_dir = make_run(tmp_path / "run", steps=10)
    log = run_dir / "log.jsonl"
    lines = log.read_text().splitlines()
    lines[4] = lines[4][:25]  # step 5, cut mid-write (a disk that filled up, a copy cut short)
    log.write_text("\n".join(lines) + "\n")
    assert main(["plot", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    assert err == f"warning: {log} line 5 is torn or not JSON ({lines[4]!r}); left out\n"  # once, naming the line
    assert (run_dir / "curves.png").is_file() and f"{run_dir}: Φ -6.05 (step 1) → -5.4 (step 10)" in out
    assert [r["step"] for r in plotting.load_run(run_dir, warn=lambda torn: None).rows] == [1, 2, 3, 4, 6, 7, 8, 9,
                                                                                           10]
    with pytest.raises(RunDirError, match="line 5 is torn or not JSON"):  # strict unless told to warn
        read_log(log)
    with pytest.raises(RunDirError, match="line 5 is torn or not a log record"):  # --resume after it stays refused
        reconcile_log(log, 8)
