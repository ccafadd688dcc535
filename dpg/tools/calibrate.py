"""`dpg calibrate`: before a long run, measure how faithfully each reward estimator carries the signal for this target,
objective, inner optimizer and batch size, against the exact leave-one-out rewards of the same batches; and which
one to use.

For each of a few generation batches sampled from the configured generator (at the configured batch size and
batching), every estimator's rewards are compared with `loo` (Φ(D) − Φ(D∖i), exact and unbiased, N + 1 SFT runs):
  * fidelity: the cosine between the policy gradients they induce, Σᵢ rᵢ ∇_ψ log π(yᵢ | promptᵢ) over the batch's
    sampled completions (raw rewards, the unbiased form; log π of the completion's tokens as generated);
  * Spearman and Pearson correlation of the per-completion rewards;
  * cost: SFT runs per reward call, counted from the estimator's definition (`cost`). Seconds are measured and
    shown, never ranked on: one timing on a shared machine can turn a ranking around.
Mean ± standard error over batches. The recommendation (`recommend`) ranks by fidelity. The leader must reach
`threshold`, else exact `loo` is recommended. An estimator that the leader does not beat by more than one standard
error of their paired difference (per batch) ties with it, and the cheapest of the tie is recommended.
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
from dpg.run.console import Console
from dpg.stats import mean_se, paired
from dpg.training.rewards import compute_rewards, pearson, spearman, to_target_examples

GROUPS = (2, 4, 8)
# SFT runs per reward call, in units of one inner SFT run over the call's N completions (docs/estimators.md):
METAGRAD_COST = 3.5  # the run and its reverse pass: engine ÷ SFT measured 2.6-4.1× (docs/performance.md; 3.53 profiled)
FIRST_ORDER_COST = 1.3  # one forward-mode jvp per microbatch at θ₀ (1.21× its gradient) and ∇Φ(θ₀), profiled there


def cost(name: str, n: int) -> float:
    """Modelled SFT runs per reward call of estimator `name` ("leave_group_out:G" with its G) on N = n completions:
    naive 1 (its inverse-group runs hold the batch's completions once between them), first_order ≈ 1.3, metagrad ≈ 3.5,
    leave_group_out G + 1, loo N + 1. Vectorised runs (loo, leave_group_out) count in full: on a tiny target they
    share kernels and take less time than their count, on a model that fills the device they do not."""
    estimator, _, groups = name.partition(":")
    if estimator == "leave_group_out":
        return int(groups) + 1.0
    return {"naive": 1.0, "first_order": FIRST_ORDER_COST, "metagrad": METAGRAD_COST, "loo": n + 1.0}[estimator]


@dataclass
class EstimatorAgreement:
    name: str
    gradient_cosine: tuple[float, float]  # fidelity: (mean, standard error) over batches
    spearman: tuple[float, float]
    pearson: tuple[float, float]
    cost: float  # modelled SFT runs per reward call (`cost`)
    seconds: float  # measured per reward call: shown, not ranked on
    cosines: list[float] = field(default_factory=list)  # per batch: the paired differences of `recommend`


@dataclass
class Calibration:
    batches: int
    completions_per_batch: int
    loo_seconds: float
    estimators: list[EstimatorAgreement] = field(default_factory=list)
    recommendation: str = ""

    def ranked(self) -> list[EstimatorAgreement]:
        """By fidelity, highest first; an estimator without one (no finite cosine) last."""
        return sorted(self.estimators, key=lambda e: -e.gradient_cosine[0] if math.isfinite(e.gradient_cosine[0])
                      else math.inf)

    def table(self) -> str:
        heads = ("estimator", "grad cosine", "Spearman vs loo", "Pearson vs loo", "SFT runs", "s/reward")
        lines = [f"{heads[0]:<18} {heads[1]:>15} {heads[2]:>16} {heads[3]:>16} {heads[4]:>9} {heads[5]:>9}"]
        for e in self.ranked():
            cells = [("–" if not math.isfinite(m) else f"{m:+.2f}" + (f" ± {se:.2f}" if math.isfinite(se) else ""))
                     for m, se in (e.gradient_cosine, e.spearman, e.pearson)]
            lines.append(f"{e.name:<18} {cells[0]:>15} {cells[1]:>16} {cells[2]:>16} {e.cost:>9.3g} "
                         f"{e.seconds:>9.2f}")
        loo = cost("loo", self.completions_per_batch)
        lines.append(f"{'loo (reference)':<18} {'':>15} {'':>16} {'':>16} {loo:>9.3g} {self.loo_seconds:>9.2f}")
        over = f"mean ± s.e. over {self.batches} batches" if self.batches > 1 else "one batch: no error bars"
        lines.append(f"(ranked by grad cosine, the fidelity: {over} of {self.completions_per_batch}; SFT runs per "
                     "reward are counted, seconds measured once)")
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


def calibrate(cfg: DPGConfig, batches: int = 4, threshold: float = 0.5, seed: int = 0,
              console: Console | None = None) -> Calibration:
    """Measure each estimator against exact leave-one-out on `batches` batches of the configured size. `console`
    (default: the config's logging.verbosity) shows the progress: a line before the models load, a bar over the
    reward calls and a line per batch with the time left."""
    from dpg.training import assembly

    console = console or Console(cfg.logging.verbosity, cfg.logging.progress)
    n, batching = cfg.grpo.num_generations, cfg.reward.batching
    run_size = cfg.grpo.completions_per_step if batching == "cross_group" else cfg.grpo.prompts_per_step
    names = ["metagrad", "first_order", "naive"] + [f"leave_group_out:{g}" for g in GROUPS if g < run_size]
    size = cfg.grpo.completions_per_step
    console.info(f"dpg calibrate: {batches} batch{'es' if batches > 1 else ''} of {size} completions from the "
                 f"configured generator, each scored by exact leave-one-out ({cost('loo', size):g} SFT runs) and by "
                 f"{', '.join(names)}")
    torch.manual_seed(seed)
    engine, _, target_tok = assembly.build_engine(cfg, console=console)
    model, tok = assembly.load_generator(cfg, console)
    model.train(False)
    prompts = [p for p in assembly.load_prompts(cfg) if isinstance(p, str)]
    if not prompts:
        raise ValueError("prompts: calibrate samples from plain-text prompts; prompts.chat is not supported here")
    stats = {k: {"spearman": [], "pearson": [], "cosine": [], "seconds": []} for k in names}
    loo_seconds = []
    partitions = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    with console.progress(batches * (1 + len(names)), description="reward calls"):
        for b in range(batches):
            chosen = [prompts[i] for i in torch.randperm(len(prompts))[:cfg.grpo.prompts_per_step].tolist()]
            enc, out = _sample(model, tok, chosen, n, cfg.grpo.max_completion_length, cfg.grpo.temperature)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            examples, _ = to_target_examples(texts, target_tok, cfg.inner_sft.max_length)
            rewards = {}
            t = time.perf_counter()
            rewards["loo"] = compute_rewards(engine, examples, n, "loo", batching).rewards
            loo_seconds.append(time.perf_counter() - t)
            console.advance()
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
                console.advance()
            grads = _policy_gradients(model, enc, out, tok, rewards)
            for name in names:
                g, ref = grads[name], grads["loo"]
                stats[name]["cosine"].append((g @ ref / (g.norm() * ref.norm())).item())
            left = (time.perf_counter() - start) / (b + 1) * (batches - b - 1)
            console.info(f"batch {b + 1}/{batches}: grad cosine " + ", ".join(
                f"{k} {stats[k]['cosine'][-1]:+.2f}" for k in names) + (f"; about {left:.0f} s left"
                                                                        if b + 1 < batches else ""))
    result = Calibration(batches, len(examples), sum(loo_seconds) / len(loo_seconds))
    for name in names:
        s = stats[name]
        result.estimators.append(EstimatorAgreement(
            name, gradient_cosine=_mean_se(s["cosine"]), spearman=_mean_se(s["spearman"]),
            pearson=_mean_se(s["pearson"]), cost=cost(name, len(examples)),
            seconds=sum(s["seconds"]) / len(s["seconds"]), cosines=s["cosine"]))
    result.recommendation = recommend(result, threshold, cfg)
    return result


def setting(name: str) -> str:
    """The config lines that select estimator `name` ("leave_group_out:G" with its G)."""
    estimator, _, groups = name.partition(":")
    if estimator == "leave_group_out":
        return f"reward.estimator: leave_group_out, reward.groups: {groups}"
    if estimator == "naive":
        return "reward.estimator: naive, reward.batching: inverse_groups, reward.advantages: batch"
    return f"reward.estimator: {estimator}"


def ahead(a: EstimatorAgreement, b: EstimatorAgreement):
    """a's fidelity minus b's, paired by batch (`dpg.stats.paired`), over the batches where both are finite."""
    pairs = [(x, y) for x, y in zip(a.cosines, b.cosines) if math.isfinite(x) and math.isfinite(y)]
    return paired([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None


def beats(a: EstimatorAgreement, b: EstimatorAgreement) -> bool:
    """a's fidelity is higher than b's by more than one standard error of their paired difference (so never on one
    batch, which has no standard error)."""
    d = ahead(a, b)
    return d is not None and d.n >= 2 and d.mean > d.se


def recommend(result: Calibration, threshold: float, cfg: DPGConfig) -> str:
    """The estimator to use, and how sure the batches make it (see the module docstring)."""
    ranked = [e for e in result.ranked() if math.isfinite(e.gradient_cosine[0])]
    loo = cost("loo", result.completions_per_batch)
    fidelity = lambda e: f"{e.gradient_cosine[0]:.2f}" + (  # noqa: E731
        f" ± {e.gradient_cosine[1]:.2f}" if math.isfinite(e.gradient_cosine[1]) else "")
    if not ranked or ranked[0].gradient_cosine[0] < threshold:
        best = f" (the best, {ranked[0].name}: {fidelity(ranked[0])})" if ranked else ""
        sgd = (", or inner SGD steps (inner_sft.optimizer: sgd), on which the estimators are usually more faithful"
               if cfg.inner_sft.optimizer != "sgd" else "")
        return (f"no estimator reaches gradient cosine {threshold} with loo{best}: use exact leave-one-out, "
                f"reward.estimator: loo ({loo:g} SFT runs per reward){sgd}")
    leader = ranked[0]
    tied = [leader] + [e for e in ranked[1:] if e.gradient_cosine[0] >= threshold and not beats(leader, e)]
    choice = min(tied, key=lambda e: (e.cost, -e.gradient_cosine[0]))
    runs = f"≈ {choice.cost:g} SFT runs per reward (loo: {loo:g})"
    if len(tied) == 1:
        if len(ranked) == 1:
            return f"use {setting(choice.name)}: gradient cosine with loo {fidelity(choice)}; {runs}"
        runner, d = ranked[1], ahead(leader, ranked[1])
        margin = f"{d.mean:.2f} ± {d.se:.2f}, paired over {d.n} batches" if d and d.n >= 2 else "no error bar"
        if beats(leader, runner):
            return (f"use {setting(choice.name)}: gradient cosine with loo {fidelity(choice)}, ahead of the runner-up "
                    f"{runner.name} by {margin}; {runs}")
        # the runner-up is not clearly behind, but under the threshold: no tie to break, and no certainty either
        return (f"use {setting(choice.name)}: gradient cosine with loo {fidelity(choice)}, the only estimator at "
                f"{threshold}, though not clearly ahead of the runner-up {runner.name} ({fidelity(runner)}; the "
                f"difference is {margin}, within one standard error): more --batches would tell them apart; {runs}")
    others = ", ".join(e.name for e in tied if e is not choice)
    why = ("one batch gives no standard error" if result.batches < 2 else
           f"the leader {leader.name} ({fidelity(leader)}) is not ahead of the others by more than one standard error "
           "of the paired difference")
    return (f"{choice.name} ({fidelity(choice)}) ties with {others} on gradient cosine with loo ({why}): use the "
            f"cheapest, {setting(choice.name)}; {runs}; more --batches can separate them")


def write(result: Calibration, path: str | Path) -> Path:
    from dpg.run import fsio

    path = Path(path)
    fsio.make_dir(path.parent)
    return fsio.write_text(path, json.dumps(result.to_dict(), indent=1))
