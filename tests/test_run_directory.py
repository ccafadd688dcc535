"""What `dpg train` leaves in its run directory: dpg's own model card (README.md), never TRL's; and nothing at all
when a new run stops before its first step, so the same command runs again without --overwrite."""

import pytest

from dpg.cli import main
from dpg.config.schema import load_config
from dpg.training import trainer
from test_trainer import FAST

QUICKSTART = "configs/quickstart.yaml"


def test_the_model_card_says_what_was_trained_and_how_to_resume_or_reproduce():
    cfg = load_config(QUICKSTART, ["output_dir=runs/my run", "reward.estimator=leave_group_out", "reward.groups=4",
                                   "objective.string=a|b"])
    rows = [{"step": 1, "phi": -6.0}, {"step": 2, "reward_failed": "x"}, {"step": 3, "phi": -5.0}]
    card = trainer.model_card(cfg, 3, rows, final=False)
    assert card.startswith("---\nlibrary_name: transformers\n") and "# my run: a generator trained with dpg" in card
    for line in ["| generator | `tiny`, LM-pretrained 300 steps on dpg's shipped corpus |",
                 "| target | `tiny` |",
                 r"| objective Φ | `target_string` (string='a\|b') |",  # a | inside would end the table cell
                 "| reward | `leave_group_out` with 4 groups, batching `cross_group`, advantages `grouped` |",
                 "| progress | 3 of 150 steps |",
                 "| Φ | Φ -6.0000 → -5.0000 (first and last scored step) |",
                 "dpg train --resume 'runs/my run'",
                 "dpg train 'runs/my run'/config.yaml output_dir='runs/my run'-again"]:
        assert line in card, line
    assert "| Φ | no step scored yet |" in trainer.model_card(cfg, 0, [], final=False)
    assert "| progress | 150 of 150 steps; the trained generator is in `final/` |" in \
        trainer.model_card(cfg, 150, rows, final=True)


def test_checkpoints_write_dpgs_card_where_trl_would_write_its_own(tmp_path, monkeypatch):
    """TRL writes its card ("fine-tuned version of …") to output_dir/README.md at every checkpoint. Stopped after the
    last checkpoint and before the end (where dpg writes its card once more), the card there is dpg's, at step 2."""
    def stop(*args):
        raise RuntimeError("stopped before final/")

    monkeypatch.setattr(trainer, "save_final", stop)
    run = tmp_path / "run"
    cfg = load_config(QUICKSTART, [*FAST, "grpo.steps=2", "checkpoint.save_every=1", f"output_dir={run}"])
    with pytest.raises(RuntimeError, match="stopped before final/"):
        trainer.train(cfg, verbosity="quiet")
    card = (run / "README.md").read_text()
    assert "a generator trained with dpg" in card and "| progress | 2 of 2 steps |" in card
    assert "fine-tuned version" not in card and "TRL" not in card


def test_a_run_that_stops_before_its_first_step_leaves_nothing_and_runs_again(tmp_path, capsys):
    """The reward fails at step 1 (Φ is finite at the initial weights, so the check before the run passes): the run
    directory this run created is gone, and the same command fails the same way, not for want of --overwrite. A
    directory that was there before stays, with what else it held."""
    args = ["train", QUICKSTART, *FAST, "grpo.steps=2", "objective={name: 'flaky_objective:nan_after_sft'}"]
    for attempt in range(2):
        assert main([*args, f"output_dir={tmp_path / 'new'}"]) == 1
        assert "reward computation failed at GRPO step 1" in capsys.readouterr().err
        assert not (tmp_path / "new").exists()
    kept = tmp_path / "existing"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main([*args, f"output_dir={kept}"]) == 1
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
