"""`dpg calibrate`: before a long run, measure whether metagradient rewards carry the signal for this target, objective,
inner optimizer and batch size, against the exact leave-one-out rewards of the same batches.

For each of a few generation batches sampled from the configured generator (at the configured batch size and
batching), every estimator's rewards are compared with `loo` (Φ(D) − Φ(D∖i), exact and unbiased, N + 1 SFT runs):
  * Spearman and Pearson correlation of the per-completion rewards;
  * the cosine between the policy gradients they induce, Σᵢ rᵢ ∇_ψ log π(yᵢ | promptᵢ) over the batch's sampled
    completions (raw rewards, the unbiased form; log π of the completion's tokens as generated);
  * seconds per reward call.
Mean ± standard error over batches. The recommendation reads the metagradient's rank agreement and gradient cosine
against `threshold`; below it, the unbiased `leave_group_out` with the G whose gradient cosine per second is best.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpg.config.schema import DPGConfig
from dpg.stats import mean_se
from dpg.training.rewards import compute_rewards, pearson, spearman, to_target_examples

GROUPS = (2, 4, 8)


@dataclass
class EstimatorAgreement:
    name: str
    spearman: tuple[float, float]  # (mean, standard error) over batches
    pearson: tuple[float, float]
    gradient_cosine: tuple[float, float]
    seconds: float  # per reward call (one batch)


@dataclass
class Calibration:
    batches: int
    completions_per_batch: int
    loo_seconds: float
    estimators: list[EstimatorAgreement] = field(default_factory=list)
    recommendation: str = ""

    def table(self) -> str:
        lines = [f"{'estimator':<18} {'Spearman vs loo':>17} {'Pearson vs loo':>17} {'grad cosine':>17} {'s/reward':>9}"]
        for e in self.estimators:
            cells = [f"{m:+.2f} ± {se:.2f}" if math.isfinite(m) else "–" for m, se in
                     (e.spearman, e.pearson, e.gradient_cosine)]
            lines.append(f"{e.name:<18} {cells[0]:>17} {cells[1]:>17} {cells[2]:>17} {e.seconds:>9.2f}")
        lines.append(f"{'loo (reference)':<18} {'':>17} {'':>17} {'':>17} {self.loo_seconds:>9.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _mean_se(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if math.isfinite(x)]  # a constant reward vector has no correlation (nan): leave it out
    return mean_se(xs) if xs else (math.nan, math.nan)


def _sample(model, tok, prompts: list[str], n: int, max_new_tokens: int, temperature: float):
    """n completions of each prompt, keeping the generated token ids (their log-probabilities are differentiated)."""
    tok.padding_side = "left"
    enc = tok([p for p in prompts for _ in range(n)], return_tensors="pt", padding=True).to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=True, temperature=temperature, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id)
    return enc, out


def _policy_gradients(model, enc, out, tok, rewards: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Σᵢ rᵢ ∇_ψ log π(yᵢ | promptᵢ) for each reward vector, from one forward pass and one backward per vector."""
    prompt_len = enc["input_ids"].shape[1]
    completion = out[:, prompt_len:]
    # the first generated EOS ends a completion (generate pads after it, with pad == EOS for some tokenizers)
    done = (completion == tok.eos_token_id).long().cumsum(1)
    keep = ((done == 0) | ((done == 1) & (completion == tok.eos_token_id))).long()
    mask = torch.cat([enc["attention_mask"], keep], 1)
    logits = model(input_ids=out, attention_mask=mask).logits[:, prompt_len - 1:-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, completion[..., None]).squeeze(-1)
    seq_logp = (logp * keep).sum(1)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = {}
    for name, r in rewards.items():
        g = torch.autograd.grad((r.to(seq_logp) * seq_logp).sum(), params, retain_graph=True)
        grads[name] = torch.cat([x.reshape(-1) for x in g]).double()
    return grads


def calibrate(cfg: DPGConfig, batches: int = 4, threshold: float = 0.5, seed: int = 0, progress=print) -> Calibration:
    """Measure each estimator against exact leave-one-out on `batches` batches of the configured size."""
    from dpg.training import assembly

    torch.manual_seed(seed)
    engine, _, target_tok = assembly.build_engine(cfg)
    model, tok = assembly.load_generator(cfg)
    model.train(False)
    prompts = [p for p in assembly.load_prompts(cfg) if isinstance(p, str)]
    if not prompts:
        raise ValueError("prompts: calibrate samples from plain-text prompts; prompts.chat is not supported here")
    n, batching = cfg.grpo.num_generations, cfg.reward.batching
    run_size = cfg.grpo.completions_per_step if batching == "cross_group" else cfg.grpo.prompts_per_step
    names = ["metagrad", "first_order", "naive"] + [f"leave_group_out:{g}" for g in GROUPS if g < run_size]
    stats = {k: {"spearman": [], "pearson": [], "cosine": [], "seconds": []} for k in names}
    loo_seconds = []
    partitions = torch.Generator().manual_seed(seed)
    for b in range(batches):
        chosen = [prompts[i] for i in torch.randperm(len(prompts))[:cfg.grpo.prompts_per_step].tolist()]
        enc, out = _sample(model, tok, chosen, n, cfg.grpo.max_completion_length, cfg.grpo.temperature)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        examples, _ = to_target_examples(texts, target_tok, cfg.inner_sft.max_length)
        rewards = {}
        t = time.perf_counter()
        rewards["loo"] = compute_rewards(engine, examples, n, "loo", batching).rewards
        loo_seconds.append(time.perf_counter() - t)
        for name in names:
            estimator, _, groups = name.partition(":")
            # naive gives one reward per SFT run: it needs inverse groups to vary within a batch
            how = "inverse_groups" if estimator == "naive" else batching
            t = time.perf_counter()
            rewards[name] = compute_rewards(engine, examples, n, estimator, how, int(groups) if groups else None,
                                            partitions).rewards
            stats[name]["seconds"].append(time.perf_counter() - t)
            stats[name]["spearman"].append(spearman(rewards[name], rewards["loo"]) if rewards[name].std() > 0
                                           else math.nan)
            stats[name]["pearson"].append(pearson(rewards[name], rewards["loo"]))
        grads = _policy_gradients(model, enc, out, tok, rewards)
        for name in names:
            g, ref = grads[name], grads["loo"]
            stats[name]["cosine"].append((g @ ref / (g.norm() * ref.norm())).item())
        progress(f"batch {b + 1}/{batches}: " + "  ".join(f"{k} ρ={stats[k]['spearman'][-1]:+.2f}" for k in names))
    result = Calibration(batches, len(examples), sum(loo_seconds) / len(loo_seconds))
    for name in names:
        s = stats[name]
        result.estimators.append(EstimatorAgreement(name, _mean_se(s["spearman"]), _mean_se(s["pearson"]),
                                                    _mean_se(s["cosine"]), sum(s["seconds"]) / len(s["seconds"])))
    result.recommendation = recommend(result, threshold, cfg)
    return result


def recommend(result: Calibration, threshold: float, cfg: DPGConfig) -> str:
    by_name = {e.name: e for e in result.estimators}
    mg = by_name["metagrad"]
    rho, cos = mg.spearman[0], mg.gradient_cosine[0]
    if rho >= threshold and cos >= threshold:
        return (f"metagrad agrees with leave-one-out at ρ = {rho:.2f} (gradient cosine {cos:.2f}, threshold "
                f"{threshold}): use it (reward.estimator: metagrad)")
    lgo = [e for e in result.estimators if e.name.startswith("leave_group_out")]
    best = max(lgo, key=lambda e: e.gradient_cosine[0] / e.seconds, default=None)
    alternative = (f"use reward.estimator: leave_group_out with reward.groups: {best.name.split(':')[1]} (gradient "
                   f"cosine {best.gradient_cosine[0]:.2f} at {best.seconds:.2f} s per reward, unbiased)"
                   if best else f"use reward.estimator: loo ({result.loo_seconds:.2f} s per reward, unbiased)")
    sgd = ", or inner SGD steps (inner_sft.optimizer: sgd)" if cfg.inner_sft.optimizer != "sgd" else ""
    return f"metagrad ρ = {rho:.2f}, gradient cosine {cos:.2f}, below {threshold}: {alternative}{sgd}"


def write(result: Calibration, path: str | Path) -> Path:
    from dpg.run import fsio

    path = Path(path)
    fsio.make_dir(path.parent)
    return fsio.write_text(path, json.dumps(result.to_dict(), indent=1))
