"""DPG generator training: TRL's GRPOTrainer with the whole generation batch scored by inner SFT runs.

One GRPO step = one generation batch (prompts_per_step × num_generations completions) = one reward call = one policy
optimizer step. Two private TRL hooks are overridden (trl is pinned exactly for that):
* `_calculate_rewards`: gather every completion of the batch first, then score them together (cross-group batching
  needs the global batch in one SFT run; TRL would score per process);
* `_generate_and_score_completions`: replace TRL's advantages (group mean, std + 1e-4) with ours (`dpg.training.rewards`).
The batch's reward is `dpg.training.batch_reward.DPGReward`; the callbacks beside the trainer (skipping a failed step's
update, the step log) are in `dpg.training.callbacks`.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import PrinterCallback
from trl import GRPOConfig, GRPOTrainer

from dpg.config import validation
from dpg.config.schema import ConfigError, DPGConfig, check_environment
from dpg.run import checkpoints, fsio
from dpg.run.checkpoints import CONFIG_FILE, LOG_FILE, checkpoint_dirs, read_log
from dpg.run.console import Console, number, quiet_libraries
from dpg.run.finite import FiniteGuard, check_loss, check_weights
from dpg.training import models
from dpg.training.assembly import build_engine, check_prompt_count, load_generator, load_prompts, lora_config
from dpg.training.batch_reward import DPGReward
from dpg.training.callbacks import SkipFailedStep, StepLogger
from dpg.training.degeneration import text_stats


class DPGTrainer(GRPOTrainer):
    def __init__(self, *, dpg_reward: DPGReward, **kwargs):
        self.dpg_reward = dpg_reward
        super().__init__(reward_funcs=[dpg_reward], **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if "failed" not in self.dpg_reward.last:  # a skipped step's loss is dropped with its gradients
            check_loss(loss, self.state.global_step + 1)
        return loss

    def _save_checkpoint(self, model, trial):
        """HF's checkpoint, made to prove it is whole (dpg/run/checkpoints.py): a folder of the same step left by a crashed
        attempt is removed first, the manifest is written last, and only then are older checkpoints deleted."""
        folder = Path(self._get_output_dir(trial)) / f"checkpoint-{self.state.global_step}"
        if self.args.should_save and folder.exists():
            fsio.remove_tree(folder)
        self.accelerator.wait_for_everyone()
        with fsio.writing(folder, "writing checkpoint"):
            super()._save_checkpoint(model, trial)
        self.accelerator.wait_for_everyone()  # every process has written its RNG state
        if self.args.should_save:
            checkpoints.write_manifest(folder, self.state.global_step, resumable=True)
            checkpoints.rotate(folder.parent, self.dpg_reward.cfg.checkpoint.keep)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None, **kwargs):
        """dpg's model card instead of TRL's (which TRL writes to output_dir/README.md at every checkpoint and
        transformers before a push to the hub): what was trained and how to reproduce or resume it."""
        if self.is_world_process_zero():
            write_model_card(self.dpg_reward.cfg, self.state.global_step)

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint and checkpoints.manifest_step(resume_from_checkpoint) >= self.args.max_steps:
            # The run had ended and only final/ is missing: take the weights, train no step past the last (HF would).
            self._load_from_checkpoint(resume_from_checkpoint)
            self.state.global_step = checkpoints.manifest_step(resume_from_checkpoint)
            return None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _issue_warnings_after_load(self, load_result):
        """HF's report of missing and unexpected keys after `--resume` loads a checkpoint's weights, less a tied head.
        save_pretrained writes a tensor that two names share once (the tied LM head is the input embeddings), so HF
        calls the head's key missing although loading the embeddings restored it, bit for bit. A missing key that
        shares its tensor with no loaded key is still reported."""
        state = self.model.state_dict()
        loaded = {(t.data_ptr(), t.shape) for k, t in state.items() if k not in load_result.missing_keys}
        missing = [k for k in load_result.missing_keys if (state[k].data_ptr(), state[k].shape) not in loaded]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Gather first: every process then holds the whole batch, in TRL's process order.
        all_prompts, all_completions = gather_object(prompts), gather_object(completions)
        try:
            out = self.dpg_reward.score(all_prompts, all_completions, step=self.state.global_step + 1)
        except Exception as e:
            if self.dpg_reward.cfg.reward.on_error != "skip_step":
                raise
            # No reward exists for this batch: mark every completion unscorable (TRL's NaN) and drop the update.
            self.dpg_reward.last = {"failed": str(e), "prompts": all_prompts, "completions": all_completions}
            self._metrics["train"]["reward/failed"].append(1.0)
            return torch.full((len(all_completions), 1), torch.nan, device=self.accelerator.device)
        info = out["info"]
        for key in ("raw_std", "eps_floor", "raw_min", "raw_max"):
            self._metrics["train"][f"reward/{key}"].append(info[key])
        self._metrics["train"]["phi"].append(out["value"])
        for k, v in out["proxies"].items():
            self._metrics["train"][f"proxy/{k}"].append(v)
        out["text"] = text_stats(out["completions"])  # is the generator degenerating? (dpg/training/degeneration.py)
        for k, v in out["text"].items():
            if v is not None:
                self._metrics["train"][f"text/{k}"].append(v)
        # TRL stores rewards as float32: fine for the logged mean; our advantages use the float64 values.
        return out["rewards"].to(torch.float32, copy=True).to(self.accelerator.device)[:, None]

    def _generate_and_score_completions(self, inputs):
        t0 = time.perf_counter()
        batch = super()._generate_and_score_completions(inputs)
        if "failed" in self.dpg_reward.last:  # the update is skipped (SkipFailedStep): these are never used
            self.dpg_reward.last["t_start"], self.dpg_reward.last["t_scored"] = t0, time.perf_counter()
            return batch
        adv = self.dpg_reward.last["advantages"]
        n_local = len(batch["advantages"])
        start = self.accelerator.process_index * n_local
        batch["advantages"] = adv[start:start + n_local].to(batch["advantages"])
        self.dpg_reward.last["t_start"], self.dpg_reward.last["t_scored"] = t0, time.perf_counter()
        return batch


def grpo_args(cfg: DPGConfig, num_processes: int = 1) -> GRPOConfig:
    g = cfg.grpo
    if g.completions_per_step % (g.micro_batch_size * num_processes):
        raise ConfigError(f"grpo.micro_batch_size: {g.micro_batch_size} × {num_processes} processes does not divide "
                          f"the {g.completions_per_step} completions per step (prompts_per_step × num_generations)")
    return GRPOConfig(
        output_dir=cfg.output_dir, max_steps=g.steps, per_device_train_batch_size=g.micro_batch_size,
        # One generation batch of completions_per_step (over all processes) per policy update.
        gradient_accumulation_steps=g.completions_per_step // (g.micro_batch_size * num_processes),
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        learning_rate=g.learning_rate, lr_scheduler_type="constant", warmup_steps=0, beta=g.beta,
        temperature=g.temperature, epsilon=g.epsilon, loss_type=g.loss_type, max_grad_norm=g.max_grad_norm,
        scale_rewards="none",  # TRL's advantages are replaced by ours anyway
        bf16=use_bf16(cfg), use_cpu=not torch.cuda.is_available(),  # TRL defaults to bf16, which a CPU refuses
        use_vllm=g.use_vllm, vllm_mode=g.vllm_mode, vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization,
        vllm_tensor_parallel_size=g.vllm_tensor_parallel_size, vllm_max_model_length=g.vllm_max_model_length,
        vllm_enable_sleep_mode=g.vllm_enable_sleep_mode, vllm_server_base_url=g.vllm_server_base_url,
        vllm_server_host=g.vllm_server_host, vllm_server_port=g.vllm_server_port,
        vllm_server_timeout=g.vllm_server_timeout,
        save_strategy="steps", save_steps=cfg.checkpoint.save_every,
        save_total_limit=None,  # dpg deletes old checkpoints itself, after the new one's manifest (checkpoints.rotate)
        logging_steps=1, report_to=["wandb"] if cfg.logging.wandb else [], run_name=Path(cfg.output_dir).name,
        disable_tqdm=True,  # dpg's console draws the bar and prints the steps (dpg/run/console.py)
        seed=cfg.seed, data_seed=cfg.seed, log_completions=False,
    )


def use_bf16(cfg: DPGConfig) -> bool:
    """grpo.bf16: "auto" turns bf16 mixed precision on exactly when a CUDA GPU is visible (a CPU run stays fp32)."""
    return torch.cuda.is_available() if cfg.grpo.bf16 == "auto" else cfg.grpo.bf16


def train(cfg: DPGConfig, resume: bool = False, verbosity: str | None = None, overwrite: bool = False) -> Path:
    """Run DPG; returns the directory of the final generator (HF format). `verbosity` overrides logging.verbosity.
    `resume`: continue the run in cfg.output_dir from its newest whole checkpoint (step 0 without one); `overwrite`:
    delete the run there first.

    Everything that can fail fast does so before the run directory is written: the objective is tried on the initial
    target (assembly.preflight) before the generator loads. A new run that stops before its first step is logged
    leaves nothing behind (`forget_unstarted`), so the same command simply runs again."""
    check_environment(cfg)  # peft for generator.lora, vllm (and a GPU) for grpo.use_vllm: before anything is written
    out = Path(cfg.output_dir)
    existed = out.exists()
    # Under torchrun / `accelerate launch` this joins the process group (gloo on CPU); alone it is one process.
    procs = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: else a GPU-less launch stays 1 process
    verbosity = verbosity or cfg.logging.verbosity
    console = Console(verbosity if procs.is_main_process else "quiet", cfg.logging.progress)
    quiet_libraries(verbosity)
    args = grpo_args(cfg, procs.num_processes)
    checkpoint, first = None, 0
    if resume:
        point = checkpoints.resume_point(out, cfg.grpo.steps)
        if point.finished:  # says so and changes nothing
            console.result(point.finished)
            return out / "final"
        checkpoint, first = point.checkpoint, point.step
        validation.check_output_dir(cfg.output_dir)
    else:
        validation.check_new_run(cfg.output_dir, overwrite)
    console.info(f"dpg train: {cfg.grpo.steps} GRPO steps of {cfg.grpo.completions_per_step} completions, objective "
                 f"{cfg.objective['name']}, estimator {cfg.reward.estimator}; log: {out / LOG_FILE}"
                 + (f"; resuming after step {first}" if first else ""))
    procs.wait_for_everyone()  # every process has checked the run directory before the main one writes to it
    if procs.is_main_process and resume:
        for line in point.warnings:
            console.warn(line)
        checkpoints.reconcile_log(out / LOG_FILE, point.step)
        checkpoints.clear_stale(out)
    if cfg.logging.wandb:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_PROJECT", cfg.logging.wandb_project)

    torch.manual_seed(cfg.seed)
    prompts = load_prompts(cfg)
    check_prompt_count(cfg, prompts)
    engine, objective, target_tok = build_engine(cfg, data_parallel=procs.num_processes > 1, console=console)
    with procs.main_process_first():  # the main process pretrains and caches the tiny generator; the others load it
        generator, gen_tok = load_generator(cfg, console)
    reward = DPGReward(engine, target_tok, cfg)
    trainer = DPGTrainer(model=generator, dpg_reward=reward, args=args, processing_class=gen_tok,
                         peft_config=lora_config(cfg),
                         train_dataset=Dataset.from_dict({"prompt": prompts}))
    trainer.add_callback(SkipFailedStep(reward))
    trainer.add_callback(FiniteGuard())
    trainer.remove_callback(PrinterCallback)  # it prints TRL's whole metrics dict every step: log.jsonl has it
    trainer.add_callback(StepLogger(reward, cfg, objective, engine.model, console))
    if procs.is_main_process:
        if overwrite:
            checkpoints.clear_run(out)
        fsio.make_dir(out)
        fsio.write_text(out / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        write_model_card(cfg, first)
    t0 = time.perf_counter()
    try:
        with console.progress(cfg.grpo.steps, completed=first):
            trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except BaseException:
        if procs.is_main_process and not resume:
            forget_unstarted(out, existed)
        raise
    final = trainer.model
    if hasattr(final, "merge_and_unload"):  # LoRA: fold the adapters in, so final/ is a plain HF model
        final = final.merge_and_unload()
    if procs.is_main_process:  # the replicas hold identical weights
        save_final(final, gen_tok, out / "final", trainer.state.global_step)
        write_model_card(cfg, trainer.state.global_step)
        console.result(summary(read_log(out / LOG_FILE), time.perf_counter() - t0, out / "final"))
    procs.wait_for_everyone()
    return out / "final"


def forget_unstarted(out: Path, existed: bool) -> None:
    """A new run that stopped before its first step was logged (an error or Ctrl-C while the first batch was generated
    or scored) holds nothing worth keeping: its config and model card are deleted, and the directory too if this run
    created it and nothing else is in it, so the same command runs again without --overwrite."""
    if (out / LOG_FILE).exists() or checkpoint_dirs(out):
        return
    for name in (CONFIG_FILE, CARD_FILE):
        (out / name).unlink(missing_ok=True)
    if not existed and not any(out.iterdir()):
        out.rmdir()


def phi_change(rows: list[dict]) -> str | None:
    """Φ at the start → at the end of a run's log, or None before a step is scored. One step's Φ is that of one batch
    of completions, noisy: each end is the mean of k scored steps, k = 10, or half the scored steps of a shorter run."""
    scored = [r["phi"] for r in rows if "phi" in r]
    if not scored:
        return None
    k = max(1, min(10, len(scored) // 2))
    which = "first and last scored step" if k == 1 else f"means of the first and last {k} scored steps"
    return f"Φ {number(sum(scored[:k]) / k)} → {number(sum(scored[-k:]) / k)} ({which})"


def summary(rows: list[dict], seconds: float, final: Path) -> str:
    """The line a finished `dpg train` ends with: steps, wall time, Φ at the start → at the end, where the generator
    is."""
    change = phi_change(rows)
    return f"done: {len(rows)} steps logged, {seconds:.0f} s{f'; {change}' if change else ''}; final generator: {final}"


CARD_FILE = "README.md"  # the run's model card, under the name the Hugging Face Hub shows


def write_model_card(cfg: DPGConfig, step: int) -> Path:
    """The run directory's README.md (`model_card`), from the config and the log so far; written at the start, at
    every checkpoint (TRL's hook, DPGTrainer.create_model_card) and at the end."""
    out = Path(cfg.output_dir)
    log = out / LOG_FILE
    rows = read_log(log, warn=lambda _: None) if log.is_file() else []  # a torn line costs the card nothing
    return fsio.write_text(out / CARD_FILE, model_card(cfg, step, rows, (out / "final").is_dir()),
                           "writing the model card")


def model_card(cfg: DPGConfig, step: int, rows: list[dict], final: bool) -> str:
    """What was trained (generator, target, objective and its parameters, estimator, steps, Φ at the start and the
    end) and the commands that resume, reproduce and evaluate the run."""
    out, g, r = cfg.output_dir, cfg.grpo, cfg.reward
    objective = dict(cfg.objective)
    name = objective.pop("name")
    parameters = ", ".join(f"{k}={v!r}" for k, v in objective.items())
    here = shlex.quote(out)

    def model(spec) -> str:
        return (f"`{spec.name_or_path}`" + (f", LM-pretrained {spec.pretrain_steps} steps on dpg's shipped corpus"
                                            if spec.pretrain_steps else "")
                + (f", LoRA adapters (r = {spec.lora.r}) merged into the weights" if spec.lora else ""))

    facts = [
        ("generator", model(cfg.generator)),
        ("target", model(cfg.target)),
        ("objective Φ", f"`{name}`" + (f" ({parameters})" if parameters else "")),
        ("reward", f"`{r.estimator}`" + (f" with {r.groups} groups" if r.groups else "")
         + f", batching `{r.batching}`, advantages `{r.advantages}`"),
        ("inner SFT", f"`{cfg.inner_sft.optimizer}`, lr {cfg.inner_sft.lr:g}, max_length {cfg.inner_sft.max_length}"),
        ("GRPO", f"{g.steps} steps of {g.completions_per_step} completions ({g.prompts_per_step} prompts × "
                 f"{g.num_generations}), learning rate {g.learning_rate:g}, seed {cfg.seed}"),
        ("progress", f"{step} of {g.steps} steps" + ("; the trained generator is in `final/`" if final else "")),
        ("Φ", phi_change(rows) or "no step scored yet"),
    ]
    table = "\n".join(f"| {k} | " + v.replace("|", r"\|") + " |" for k, v in facts)  # a | inside would end the cell
    return f"""---
library_name: transformers
tags: [dpg, grpo, trl]
---

# {Path(out).name}: a generator trained with dpg

Dataset Policy Gradient: GRPO on the generator, each completion rewarded by what it does to an objective Φ of a
target model fine-tuned (inner SFT) on the generated batch.

| | |
|---|---|
{table}

`final/` is the generator (Hugging Face format, with its tokenizer); `config.yaml` holds every setting of the run,
seeds included; `log.jsonl` has one record per GRPO step (`dpg plot {here}` draws it).

```bash
dpg train --resume {here}                                # continue from the newest whole checkpoint
dpg train {here}/config.yaml output_dir={here}-again     # the same run again, in a new directory
dpg evaluate {here}/config.yaml --generator initial {here}/final --repeats 3   # Φ after SFT on its samples
```
"""


def save_final(model, tokenizer, directory: Path, step: int) -> None:
    """final/: checked finite, written whole or not at all (models.save_model renames a finished temporary folder),
    then given its manifest, which is what makes `--resume` call the run finished."""
    check_weights(model, None, step)
    with fsio.writing(directory, "writing the final generator to"):
        models.save_model(model, tokenizer, directory)
    checkpoints.write_manifest(directory, step, resumable=False)
