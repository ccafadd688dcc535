"""Exactness of the metagradient engine (float64, tiny untied GPT-2).

Tolerances: central finite differences ≤ 1e-5 relative per weight; the independent unrolled references ≤ 1e-8
relative to the largest metagradient (max |engine − reference| ≤ 1e-8 · max |reference|).
"""

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from benchmarks.reference import higher_sgd, unrolled

from dpg import InnerSFTConfig, MetagradEngine


def head_norm(model, params):
    return -params["lm_head.weight"].pow(2).sum().sqrt()


def val_loss(model, params):
    """Φ = −mean next-token loss on fixed held-out sequences: touches every parameter."""
    ids = torch.tensor(random_examples(3, min_len=8, max_len=8, seed=99))
    logits = torch.func.functional_call(model, params, (ids,)).logits
    return -torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


SETUPS = {  # ≥ 3 steps of ≥ 2 microbatches each
    "sgd": dict(optimizer="sgd", lr=0.5, microbatch_size=2, grad_accum_steps=2),
    "sgd_momentum": dict(optimizer="sgd", lr=0.2, momentum=0.9, microbatch_size=2, grad_accum_steps=2),
    "adamw": dict(optimizer="adamw", lr=1e-2, eps_root=1e-9, microbatch_size=2, grad_accum_steps=2),
    "adamw_official": dict(optimizer="adamw", lr=1e-2, eps_root=1e-9, microbatch_size=2, grad_accum_steps=2,
                           loss_normalization="official"),
}
N = 13  # not divisible by the 4 examples per step: the last step is short


def engine_for(setup, objective=val_loss, **extra):
    cfg = InnerSFTConfig(**SETUPS[setup], max_length=16, dtype=torch.float64, **extra)
    return MetagradEngine(tiny_gpt2(), objective, cfg)


def reference_kwargs(setup):
    s = dict(SETUPS[setup])
    return dict(optimizer=s.pop("optimizer"), lr=s.pop("lr"), mb=s.pop("microbatch_size"),
                ga=s.pop("grad_accum_steps"), normalization=s.pop("loss_normalization", "token_mean"),
                max_length=16, **s)


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("objective", [val_loss, head_norm])
def test_matches_central_finite_differences(setup, objective):
    engine, examples = engine_for(setup, objective), random_examples(N)
    res = engine.run(examples)
    assert res.num_steps == 4
    h = 1e-6 if setup.startswith("adamw") else 1e-4  # Adam's metagradient is steep where |g| ~ sqrt(eps_root)
    for i in [0, 3, 5, 8, 12]:
        e = torch.zeros(N, dtype=torch.float64)
        e[i] = h
        fd = (engine.value(examples, 1 + e) - engine.value(examples, 1 - e)) / (2 * h)
        assert abs(res.metagrads[i].item() - fd) <= 1e-5 * abs(fd), (i, res.metagrads[i].item(), fd)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_matches_full_unroll_autograd(setup):
    engine, examples = engine_for(setup), random_examples(N)
    res = engine.run(examples)
    phi, ref = unrolled(engine.model, val_loss, examples, **reference_kwargs(setup))
    assert res.value == pytest.approx(phi, rel=1e-12)
    assert (res.metagrads - ref).abs().max() <= 1e-8 * ref.abs().max()


def test_matches_higher_for_sgd():
    engine, examples = engine_for("sgd"), random_examples(N)
    res = engine.run(examples)
    kw = reference_kwargs("sgd")
    kw.pop("optimizer")
    phi, ref = higher_sgd(engine.model, val_loss, examples, **kw)
    assert res.value == pytest.approx(phi, rel=1e-12)
    assert (res.metagrads - ref).abs().max() <= 1e-8 * ref.abs().max()


def test_two_epochs_match_unroll():
    engine, examples = engine_for("adamw", epochs=2), random_examples(7)
    res = engine.run(examples)
    _, ref = unrolled(engine.model, val_loss, examples, epochs=2, **reference_kwargs("adamw"))
    assert (res.metagrads - ref).abs().max() <= 1e-8 * ref.abs().max()


def test_metagrads_come_back_in_input_order():
    """One step holding every example: the loss is permutation invariant, so metagrads must permute with the input."""
    cfg = InnerSFTConfig(optimizer="adamw", lr=1e-2, microbatch_size=4, grad_accum_steps=3, max_length=16,
                         dtype=torch.float64)
    engine = MetagradEngine(tiny_gpt2(), val_loss, cfg)
    examples = random_examples(12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(1)).tolist()
    a = engine.run(examples).metagrads
    b = engine.run([examples[p] for p in perm]).metagrads
    assert torch.allclose(b, a[perm], rtol=1e-10, atol=0)
    assert not torch.allclose(a, a[perm])  # distinct values, so a wrong scatter could not pass


@pytest.mark.parametrize("setup", ["sgd", "adamw"])
def test_zero_weight_is_exactly_removal(setup):
    """token_mean: Φ at wᵢ = 0 is Φ of SFT with example i taken out of its microbatch (the rest of the schedule
    unchanged), by an independent unroll; example 12 is alone in the short last step, which then trains on nothing."""
    engine, examples = engine_for(setup), random_examples(N)
    for i in [0, 5, 12]:
        w = torch.ones(N, dtype=torch.float64)
        w[i] = 0
        phi, _ = unrolled(engine.model, val_loss, examples, drop={i}, **reference_kwargs(setup))
        assert engine.value(examples, w) == pytest.approx(phi, rel=1e-12, abs=0)
    assert engine.value(examples) != pytest.approx(phi, rel=1e-6)  # removing an example does change Φ


@pytest.mark.parametrize("setup", ["sgd", "adamw"])
def test_token_mean_metagrads_sum_to_zero_within_each_step(setup):
    """Scaling every weight of a step leaves its weighted mean loss unchanged, so Σ_{i in step} wᵢ·dΦ/dwᵢ = 0: DPG's
    rewards rank examples within their step, and an example alone in its step (12, in the short last step) gets
    exactly 0 whatever it is, although removing it does change Φ (test above)."""
    engine, examples = engine_for(setup), random_examples(N)
    w = torch.rand(N, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    g = engine.run(examples, w).metagrads
    steps = [torch.cat([mb.index for mb in step.microbatches]) for step in engine._schedule(examples)]
    assert sorted(torch.cat(steps).tolist()) == list(range(N))
    for members in steps:
        assert (w[members] * g[members]).sum().abs() <= 1e-12 * g.abs().max()
    assert [len(m) for m in steps][-1] == 1 and g[steps[-1]].abs().max() <= 1e-12 * g.abs().max()
    assert g.abs().max() > 0


def test_official_normalisation_keeps_a_zero_weight_in_the_mean():
    """official divides by max_length · microbatch size whatever the weights: wᵢ = 0 is not removal there."""
    engine, examples = engine_for("adamw_official"), random_examples(N)
    w = torch.ones(N, dtype=torch.float64)
    w[0] = 0
    removed, _ = unrolled(engine.model, val_loss, examples, drop={0}, **reference_kwargs("adamw_official"))
    assert engine.value(examples, w) != pytest.approx(removed, rel=1e-6)


def test_token_mean_is_invariant_to_the_microbatch_split():
    examples = random_examples(8)
    results = []
    for mb, ga in [(8, 1), (4, 2), (2, 4), (1, 8)]:
        cfg = InnerSFTConfig(optimizer="adamw", lr=1e-2, microbatch_size=mb, grad_accum_steps=ga, max_length=16,
                             dtype=torch.float64)
        results.append(MetagradEngine(tiny_gpt2(), val_loss, cfg).run(examples).metagrads)
    for r in results[1:]:
        assert torch.allclose(r, results[0], rtol=1e-10, atol=0)


@pytest.mark.parametrize("setup", ["sgd", "adamw"])
def test_random_direction_is_first_order_accurate(setup):
    engine, examples = engine_for(setup), random_examples(N)
    res = engine.run(examples)
    delta = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    slope = (delta @ res.metagrads).item()
    eps = 1e-7 if setup == "adamw" else 1e-6  # the one-sided error is O(eps · curvature); Adam's is large
    one_sided = (engine.value(examples, 1 + eps * delta) - res.value) / eps
    central = (engine.value(examples, 1 + eps * delta) - engine.value(examples, 1 - eps * delta)) / (2 * eps)
    assert one_sided == pytest.approx(slope, rel=1e-4)
    assert central == pytest.approx(slope, rel=1e-6)


def test_value_at_ones_equals_run_value():
    engine, examples = engine_for("adamw"), random_examples(N)
    assert engine.value(examples, torch.ones(N)) == engine.run(examples).value


def test_float32_default_agrees_with_float64():
    examples = random_examples(N)
    r64 = engine_for("sgd").run(examples).metagrads
    cfg = InnerSFTConfig(**SETUPS["sgd"], max_length=16)
    assert cfg.dtype == "float32" and cfg.torch_dtype == torch.float32
    r32 = MetagradEngine(tiny_gpt2(), val_loss, cfg).run(examples).metagrads
    assert r32.dtype == torch.float32
    assert torch.allclose(r32.double(), r64, rtol=1e-3, atol=1e-4 * r64.abs().max().item())


def test_sdpa_target_is_switched_to_eager():
    model = tiny_gpt2()
    model.set_attn_implementation("sdpa")
    engine = MetagradEngine(model, val_loss, InnerSFTConfig(**SETUPS["adamw"], max_length=16, dtype=torch.float64))
    assert model.config._attn_implementation == "eager" and not model.training
    assert torch.isfinite(engine.run(random_examples(6)).metagrads).all()


def test_model_weights_are_not_modified():
    engine = engine_for("adamw")
    before = {k: p.clone() for k, p in engine.model.named_parameters()}
    engine.run(random_examples(N))
    assert all(torch.equal(before[k], p) for k, p in engine.model.named_parameters())


def test_proxies_are_reported():
    class WithProxy:
        def __call__(self, model, params):
            return head_norm(model, params)

        def proxies(self, model, params):
            return {"norm": params["lm_head.weight"].norm()}

    cfg = InnerSFTConfig(**SETUPS["sgd"], max_length=16, dtype=torch.float64)
    res = MetagradEngine(tiny_gpt2(), WithProxy(), cfg).run(random_examples(5))
    assert res.proxies["norm"] == pytest.approx(-res.value)


@pytest.mark.parametrize("examples, match", [
    ([], "empty"),
    ([[1, 2, 3], [4]], r"examples\[1\]: has 1 token"),
    ([[1, 2, 3], list(range(1, 30))], r"examples\[1\]: has 29 tokens, over inner_sft.max_length=16"),
])
def test_bad_examples_raise(examples, match):
    with pytest.raises(ValueError, match=match):
        engine_for("sgd").run(examples)


def test_non_scalar_objective_raises():
    engine = engine_for("sgd", objective=lambda model, params: params["lm_head.weight"].sum(0))
    with pytest.raises(ValueError, match=r"objective must return a scalar tensor, got \(16,\)"):
        engine.run(random_examples(4))


def test_non_finite_objective_raises():
    engine = engine_for("sgd", objective=lambda model, params: params["lm_head.weight"].sum() * float("nan"))
    with pytest.raises(FloatingPointError, match="objective value"):
        engine.run(random_examples(4))


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match=r"inner_sft.optimizer: invalid value 'adam'"):
        InnerSFTConfig(optimizer="adam")
    with pytest.raises(ValueError, match=r"inner_sft.microbatch_size"):
        InnerSFTConfig(microbatch_size=0)
    with pytest.raises(ValueError, match=r"inner_sft.dtype: unknown dtype 'float8'"):
        InnerSFTConfig(dtype="float8")


def test_first_order_is_exact_for_one_sgd_step_and_a_linear_objective():
    direction = torch.randn(64, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    def linear(model, params):
        return (direction * params["lm_head.weight"]).sum()

    cfg = InnerSFTConfig(optimizer="sgd", lr=0.5, microbatch_size=4, grad_accum_steps=2, max_length=16,
                         dtype=torch.float64)
    engine = MetagradEngine(tiny_gpt2(), linear, cfg)
    examples = random_examples(8)  # one step of two microbatches
    assert torch.allclose(engine.first_order(examples), engine.run(examples).metagrads, rtol=1e-10, atol=0)
    longer = random_examples(16)  # two steps: the first-order reward ignores the second-step curvature
    assert not torch.allclose(engine.first_order(longer), engine.run(longer).metagrads, rtol=1e-3)


@pytest.mark.parametrize("storage", [dict(state_storage="disk"), dict(state_storage="recompute"),
                                     dict(state_storage="recompute", recompute_segment=1),
                                     dict(state_storage="recompute", recompute_segment=3)])
def test_state_storage_strategies_give_identical_metagrads(storage, tmp_path):
    examples = random_examples(N)
    reference = engine_for("adamw").run(examples)
    if storage["state_storage"] == "disk":
        storage = dict(storage, state_dir=str(tmp_path))
    res = engine_for("adamw", **storage).run(examples)
    assert res.value == reference.value
    # The same operations in the same order; only memory layouts differ (a safetensors round trip makes every tensor
    # contiguous), which may change the last bit of a float64 matmul.
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-13 * reference.metagrads.abs().max()
    assert list(tmp_path.iterdir()) == []  # disk states are deleted once the reverse pass is done


def test_recompute_default_segment_is_ceil_sqrt_of_steps():
    from dpg.engine.states import RecomputeStore

    assert [RecomputeStore(k, None, None).segment for k in (1, 2, 4, 5, 9, 10, 64)] == [1, 2, 2, 3, 3, 4, 8]
    with pytest.raises(ValueError, match="inner_sft.state_storage: invalid value 'ram'"):
        InnerSFTConfig(state_storage="ram")


def test_a_failed_state_write_raises_instead_of_giving_metagrads(monkeypatch, tmp_path):
    import dpg.engine.states

    written, save_file = [], dpg.engine.states.save_file

    def save_file_failing_at_step_1(tensors, path):
        written.append(path)
        if len(written) == 2:
            raise OSError("No space left on device")
        save_file(tensors, path)

    monkeypatch.setattr(dpg.engine.states, "save_file", save_file_failing_at_step_1)
    engine = engine_for("adamw", state_storage="disk", state_dir=str(tmp_path))
    with pytest.raises(OSError, match="No space left"):
        engine.run(random_examples(N))
    assert len(written) == 4  # every step was written (the failure surfaced when the reverse pass reached step 1)
    assert list(tmp_path.iterdir()) == []


# -- graph budget: kept graphs give the same metagradients -------------------------------------------------------

def full_graph_mb(setup, **extra):
    """The memory of every step's graph, as the engine measures it (budget unlimited)."""
    res = engine_for(setup, graph_budget_mb=math.inf, **extra).run(random_examples(N))
    assert res.kept_steps == res.num_steps == 4
    return res.graph_mb


@pytest.mark.parametrize("setup", list(SETUPS))  # SGD, SGD + momentum, AdamW; token_mean and official; 2 mb per step
@pytest.mark.parametrize("budget", ["half", "unlimited"])
def test_kept_graphs_give_identical_metagrads(setup, budget):
    examples = random_examples(N)
    reference = engine_for(setup, graph_budget_mb=0).run(examples)
    assert reference.kept_steps == 0 and reference.graph_mb == 0  # budget 0: every step recomputes
    mb = math.inf if budget == "unlimited" else full_graph_mb(setup) / 2
    res = engine_for(setup, graph_budget_mb=mb).run(examples)
    assert res.value == reference.value  # the kept step gradients are bit-identical: the same training run
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-12 * reference.metagrads.abs().max()
    assert res.kept_steps == (4 if budget == "unlimited" else 2)  # half: the short last step and the one before
    assert 0 < res.graph_mb <= mb


@pytest.mark.parametrize("storage", [dict(state_storage="disk"), dict(state_storage="recompute", recompute_segment=3)])
@pytest.mark.parametrize("budget", ["half", "unlimited"])
def test_kept_graphs_work_with_every_state_storage(storage, budget, tmp_path):
    examples = random_examples(N)
    reference = engine_for("adamw", graph_budget_mb=0).run(examples)
    mb = math.inf if budget == "unlimited" else full_graph_mb("adamw") / 2
    if storage["state_storage"] == "disk":
        storage = dict(storage, state_dir=str(tmp_path))
    res = engine_for("adamw", graph_budget_mb=mb, **storage).run(examples)
    assert res.kept_steps == (4 if budget == "unlimited" else 2)
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-12 * reference.metagrads.abs().max()


def test_the_last_steps_are_kept_and_never_more_than_the_budget(monkeypatch):
    """The estimate picks the last steps that fit; when a graph turns out larger than estimated (here: an estimate
    that says everything fits), the earliest kept one is dropped, so the kept graphs stay within the budget."""
    import dpg.engine.graphs
    from dpg.engine.sft import make_schedule

    engine, examples = engine_for("adamw"), random_examples(N)
    steps = make_schedule(examples, engine.cfg)
    w = torch.ones(N, dtype=torch.float64)
    sizes = {}
    engine.cfg.graph_budget_mb = math.inf
    engine._train(steps, w, graphs=sizes)
    sizes = {k: g.nbytes for k, g in sizes.items()}
    engine.cfg.graph_budget_mb = (sizes[2] + sizes[3]) * 1.01 / 2**20
    kept = {}
    engine._train(steps, w, graphs=kept)
    assert sorted(kept) == [2, 3]
    monkeypatch.setattr(dpg.engine.graphs, "_first_kept", lambda *args: 0)
    kept = {}
    engine._train(steps, w, graphs=kept)
    assert sorted(kept) == [2, 3]
    reference = engine_for("adamw", graph_budget_mb=0).run(examples)
    res = engine.run(examples)
    assert res.kept_steps == 2 and res.graph_mb <= engine.cfg.graph_budget_mb
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-12 * reference.metagrads.abs().max()


def test_auto_budget_is_a_fraction_of_the_free_memory_after_the_stored_states(monkeypatch):
    from dpg.engine.graphs import free_memory, graph_budget
    from dpg.engine.sft_config import AUTO_GRAPH_BUDGET

    engine = engine_for("adamw", graph_budget_mb="auto")
    available = int(re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) * 1024
    free = free_memory(engine.device)  # at most the available memory: a container's own limit can lower it
    assert 0 < free <= 1.1 * available  # free memory moves
    assert graph_budget(engine.cfg, engine.device, 4, 0) == pytest.approx(AUTO_GRAPH_BUDGET * free, rel=0.1)
    # the memory store will hold 4 steps' states in the same RAM: they are not the graphs' to take
    assert graph_budget(engine.cfg, engine.device, 4, free / 8) == pytest.approx(AUTO_GRAPH_BUDGET * free / 2, rel=0.1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of a launch on one machine share its RAM
    assert free_memory(engine.device) == pytest.approx(free / 2, rel=0.1)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    examples = random_examples(N)
    res = engine.run(examples)  # a few MB of graphs against GBs free: every step but step 0 is kept
    assert res.kept_steps == 3 and InnerSFTConfig().graph_budget_mb == "auto"  # the default
    reference = engine_for("adamw", graph_budget_mb=0).run(examples)
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-12 * reference.metagrads.abs().max()


@pytest.mark.parametrize("value, message", [
    (-1, "must be in [0, inf] (MB of autograd graphs kept, 0 = none), got -1.0"),
    (float("nan"), "must be in [0, inf] (MB of autograd graphs kept, 0 = none), got nan"),
    ("lots", "invalid value 'lots'"), (True, "invalid value True"), (None, "invalid value None")])
def test_bad_graph_budget_names_the_field(value, message):
    with pytest.raises(ValueError, match=rf"^inner_sft.graph_budget_mb: {re.escape(message)}$"):
        InnerSFTConfig(graph_budget_mb=value)


def test_graph_budget_loads_from_yaml(tmp_path):
    from dpg.config.schema import ConfigError, load_config

    path = tmp_path / "c.yaml"
    for text, expected in [("auto", "auto"), ("512", 512.0), ("1.5e3", 1500.0), ("0", 0.0)]:
        path.write_text(f"inner_sft:\n  graph_budget_mb: {text}\n")
        assert load_config(path).inner_sft.graph_budget_mb == expected
    for text in ["-5", "lots"]:
        path.write_text(f"inner_sft:\n  graph_budget_mb: {text}\n")
        with pytest.raises(ConfigError, match="inner_sft.graph_budget_mb"):
            load_config(path)


def test_a_budget_below_every_graph_builds_one_microbatch_graph_only(monkeypatch):
    """The estimate comes from the first microbatch's graph: when no step fits, no other graph is built, so the
    forward pass never holds more than one microbatch's graph (which the reverse pass holds anyway)."""
    from dpg.engine.graphs import GradientGraph

    built, add = [], GradientGraph.add
    monkeypatch.setattr(GradientGraph, "add", lambda self, model, mb: (built.append(mb), add(self, model, mb)))
    examples = random_examples(N)
    res = engine_for("adamw", graph_budget_mb=0.1).run(examples)  # a step's θ_k and g_k alone are 0.15 MB here
    assert res.kept_steps == 0 and len(built) == 1 + 5  # the measured one, then the HVPs of steps 1-3 (2 + 2 + 1)
    reference = engine_for("adamw", graph_budget_mb=0).run(examples)
    assert (res.metagrads - reference.metagrads).abs().max() <= 1e-12 * reference.metagrads.abs().max()


def test_auto_budget_builds_no_graph_at_step_0(monkeypatch):
    """Step 0's reverse pass is a forward-mode JVP that holds no graph: under "auto" a one-step run builds none, so
    the default never holds more than the recompute path would, however large a microbatch's graph."""
    from dpg.engine.graphs import GradientGraph

    built, add = [], GradientGraph.add
    monkeypatch.setattr(GradientGraph, "add", lambda self, model, mb: (built.append(mb), add(self, model, mb)))
    examples = random_examples(4)  # one step of 2 microbatches
    res = engine_for("adamw", graph_budget_mb="auto").run(examples)
    assert res.num_steps == 1 and res.kept_steps == 0 and built == []
    reference = engine_for("adamw", graph_budget_mb=0).run(examples)
    assert torch.equal(res.metagrads, reference.metagrads)


# -- low precision: bfloat16 with AdamW warns, float16 is refused, unless the caller opts in ---------------------

def test_bfloat16_adamw_metagradients_warn_with_the_measured_cosine():
    cfg = InnerSFTConfig(**SETUPS["adamw"], max_length=16, dtype="bfloat16")
    with pytest.warns(UserWarning, match=r"^inner_sft.dtype: bfloat16: AdamW metagradients had cosine [\d.]+ to "):
        engine = MetagradEngine(tiny_gpt2(), val_loss, cfg)
    assert engine.params0["lm_head.weight"].dtype == torch.bfloat16  # a warning: the run goes ahead


@pytest.mark.parametrize("setup", ["adamw", "sgd"])
def test_float16_metagradients_are_refused_unless_opted_in(setup):
    from dpg.errors import ConfigError

    cfg = InnerSFTConfig(**SETUPS[setup], max_length=16, dtype="float16")
    model = tiny_gpt2()
    refused = r"^inner_sft.dtype: float16: .* not finite .*inner_sft.allow_low_precision: true"
    with pytest.raises(ConfigError, match=refused):
        MetagradEngine(model, val_loss, cfg)
    assert next(model.parameters()).dtype == torch.float64  # refused before the target was cast
    engine = MetagradEngine(model, val_loss, dataclasses.replace(cfg, allow_low_precision=True))
    assert engine.params0["lm_head.weight"].dtype == torch.float16


@pytest.mark.parametrize("setup, dtype, opt_in", [("adamw", "float32", False), ("adamw", "float64", False),
                                                   ("adamw", "bfloat16", True), ("sgd", "bfloat16", False)])
def test_full_precision_bfloat16_sgd_or_an_opt_in_is_silent(setup, dtype, opt_in):
    import warnings

    cfg = InnerSFTConfig(**SETUPS[setup], max_length=16, dtype=dtype, allow_low_precision=opt_in)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MetagradEngine(tiny_gpt2(), val_loss, cfg)
