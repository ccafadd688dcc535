"""The trainer's callbacks: dropping the update of a step whose rewards failed (`SkipFailedStep`), and the step's
record in log.jsonl and on the console (`StepLogger`). Transformers' TrainerCallback only: no TRL."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

import dpg.objectives as objectives
from dpg.config.schema import DPGConfig
from dpg.run import fsio
from dpg.run.checkpoints import LOG_FILE
from dpg.run.console import Console, step_line
from dpg.training.batch_reward import DPGReward
from dpg.training.degeneration import CollapseMonitor


class SkipFailedStep(TrainerCallback):
    """`reward.on_error: skip_step`: drop the gradients of a step whose rewards failed, so the optimizer skips every
    parameter (torch's AdamW leaves a parameter without .grad untouched: no momentum drift, no weight decay)."""

    def __init__(self, reward: DPGReward):
        self.reward = reward

    def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
        if "failed" in (self.reward.last or {}):
            for p in model.parameters():
                p.grad = None
        return control


class StepLogger(TrainerCallback):
    """One JSONL line per GRPO step (Φ, proxies, reward statistics, completion diversity, timings, sample
    completions, TRL's metrics), the same step as one console line, a warning when the generator collapses; heatmaps.

    The record is built at the end of the step and written when TRL logs that step's metrics (HF logs right after
    `on_step_end` and before it saves a checkpoint, so a checkpoint never holds steps the log lacks)."""

    def __init__(self, reward: DPGReward, cfg: DPGConfig, objective, target_model, console: Console):
        self.reward, self.cfg, self.objective, self.target = reward, cfg, objective, target_model
        self.path = Path(cfg.output_dir) / LOG_FILE
        self.console = console
        self.monitor = CollapseMonitor(cfg.logging.collapse_distinct_2, cfg.logging.collapse_empty)
        self.pending: dict | None = None  # this step's record, waiting for TRL's metrics

    def on_log(self, args, state, control, logs=None, **kw):
        if self.pending is not None and self.pending["step"] == state.global_step:
            self._write({**self.pending, "trl": dict(logs or {})})
        elif state.is_world_process_zero:  # the end-of-training summary (runtime, samples per second)
            self.console.debug(f"trl: {logs}")
        return control

    def on_train_end(self, args, state, control, **kw):
        if self.pending is not None:  # a step whose metrics TRL did not log (it logs every step: logging_steps=1)
            self._write(self.pending)
        return control

    def _write(self, record: dict) -> None:
        self.pending = None
        fsio.append_line(self.path, json.dumps(record), "appending step to")
        self.console.info(step_line(record, self.cfg.grpo.steps))
        self.console.debug(f"trl: {record.get('trl', {})}")
        for message in record.get("warnings", []):
            self.console.warn(message)
        self.console.advance()

    def on_step_end(self, args, state, control, **kw):
        if not state.is_world_process_zero:  # every process holds the same batch record; one writes it
            return control
        if self.pending is not None:
            self._write(self.pending)
        # Timestamps from inside the step: HF may fetch (and so generate) before on_step_begin fires.
        last = self.reward.last
        if "failed" in last:
            self.pending = {"step": state.global_step, "reward_failed": last["failed"]}
            return control
        now = time.perf_counter()
        total = now - last["t_start"]
        gen_and_score = last["t_scored"] - last["t_start"]
        r = last["rewards"]
        record = {
            "step": state.global_step,
            "phi": last["value"],
            "proxies": last["proxies"],
            "reward": {"mean": r.mean().item(), "std": r.std().item(), "min": r.min().item(), "max": r.max().item()},
            "advantage_scaling": last["info"],
            "sft_runs": last["runs"],
            "inner_steps": last["inner_steps"],  # {"total", "from_kept_graphs"}: inner_sft.graph_budget_mb at work
            "truncated": last["truncated"],
            "empty_content": last["empty_content"],  # chat messages without content, scored as empty completions
            "text": last["text"],
            "seconds": {"generation": gen_and_score - last["seconds"], "reward": last["seconds"],
                        "policy_update": total - gen_and_score, "total": total},
            "samples": [{"prompt": p if isinstance(p, str) else str(p), "completion": c, "reward": float(x)}
                        for p, c, x in list(zip(last["prompts"], last["completions"], r.tolist()))
                        [:self.cfg.logging.sample_completions]],
        }
        warnings = self.monitor.check(state.global_step, last["text"], last["completions"])
        if warnings:
            record["warnings"] = warnings
        self.pending = record
        k = self.cfg.logging.heatmap_every
        if k and hasattr(self.objective, "maps") and state.global_step % k == 0:
            out = Path(self.cfg.output_dir) / "pictures" / f"step{state.global_step:05d}.png"
            fsio.make_dir(out.parent)
            with fsio.writing(out, "saving a heatmap to"):
                objectives.save_pattern_png(self.objective, self.target, last["params"], out,
                                            title=f"GRPO step {state.global_step}")
        return control
