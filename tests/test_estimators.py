"""Exact removal rewards: batched Φ's, `loo` against retraining without each example, `leave_group_out`, and the
unbiasedness of removal baselines checked by exhaustive enumeration (float64, tiny GPT-2).

Tolerances: batched and sequential Φ ≤ 1e-12 relative; enumerated expectations ≤ 1e-10 of ‖∇J‖.
"""

import itertools

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from benchmarks.reference import unrolled
from test_engine import SETUPS, reference_kwargs, val_loss

from dpg import InnerSFTConfig, MetagradEngine
from dpg.training.rewards import compute_rewards, random_partition, removal_rewards

N = 7  # 2 steps of 2 microbatches, the last one short


def engine_for(setup, objective=val_loss):
    return MetagradEngine(tiny_gpt2(), objective, InnerSFTConfig(**SETUPS[setup], max_length=16, dtype=torch.float64))


@pytest.mark.parametrize("setup", list(SETUPS))
def test_batched_values_equal_sequential_values(setup):
    engine, examples = engine_for(setup), random_examples(N)
    W = 1 + torch.rand(5, N, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W[1, 2] = W[2, :4] = W[3] = 0  # removals, down to an empty run
    sequential = torch.tensor([engine.value(examples, w) for w in W], dtype=torch.float64)
    for budget in (1024, 1e-6):  # one chunk of 5 rows, and 5 chunks of one row
        assert torch.allclose(engine.values(examples, W, budget_mb=budget), sequential, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"weights: shape \(7,\)"):
        engine.values(examples, W[0])


@pytest.mark.parametrize("setup", ["sgd", "adamw"])
def test_loo_equals_retraining_without_each_example(setup):
    engine, examples = engine_for(setup), random_examples(N)
    loo = compute_rewards(engine, examples, 1, "loo", "cross_group").rewards
    phi, _ = unrolled(engine.model, val_loss, examples, **reference_kwargs(setup))
    for i in range(N):
        without_i, _ = unrolled(engine.model, val_loss, examples, drop={i}, **reference_kwargs(setup))
        assert loo[i].item() == pytest.approx(phi - without_i, rel=1e-9, abs=1e-13)


def test_leave_group_out_with_singleton_groups_is_loo():
    engine, examples = engine_for("adamw"), random_examples(N)
    loo = compute_rewards(engine, examples, 1, "loo", "cross_group").rewards
    lgo = compute_rewards(engine, examples, 1, "leave_group_out", "cross_group", groups=N,
                          generator=torch.Generator().manual_seed(5)).rewards
    assert torch.equal(lgo, loo)
    two = compute_rewards(engine, examples, 1, "leave_group_out", "cross_group", groups=2,
                          generator=torch.Generator().manual_seed(5)).rewards
    assert len(set(two.tolist())) == 2  # one reward per group


def test_random_partition_is_balanced_and_checked():
    parts = random_partition(10, 3, torch.Generator().manual_seed(0))
    assert sorted(i for p in parts for i in p) == list(range(10)) and sorted(map(len, parts)) == [3, 3, 4]
    for bad in (0, 11, None):
        with pytest.raises(ValueError, match="reward.groups"):
            random_partition(10, bad)


def test_removal_baselines_are_unbiased_by_enumeration():
    """J(ψ) = E_D[Φ(A(D))] with D = 3 iid draws from a softmax policy over 3 documents. Enumerating all 27 ordered
    datasets gives ∇J = Σ_D P(D)·Φ(D)·Σᵢ ∇log π(xᵢ) exactly; for every partition of the 3 positions into groups, the
    expectation of Σᵢ (Φ(D) − Φ(D∖group(i)))·∇log π(xᵢ) must equal it (the baseline never sees xᵢ). The exact
    metagradient is a Taylor estimate of those differences, so its expectation must not."""
    docs = random_examples(3, min_len=4, max_len=9, seed=4)
    cfg = InnerSFTConfig(optimizer="adamw", lr=2e-2, microbatch_size=1, grad_accum_steps=2, max_length=16,
                         dtype=torch.float64)
    engine = MetagradEngine(tiny_gpt2(), val_loss, cfg)
    pi = torch.softmax(torch.tensor([0.3, -0.5, 0.1], dtype=torch.float64), 0)
    score = torch.eye(3, dtype=torch.float64) - pi  # ∇_ψ log π(k) = e_k − π
    partitions = [[[0], [1], [2]], [[0, 1, 2]], [[0], [1, 2]], [[1], [0, 2]], [[2], [0, 1]]]
    grad_j = torch.zeros(3, dtype=torch.float64)
    expected = {str(p): torch.zeros(3, dtype=torch.float64) for p in partitions}
    expected["metagrad"] = torch.zeros(3, dtype=torch.float64)
    for xs in itertools.product(range(3), repeat=3):
        data = [docs[x] for x in xs]
        p_d = pi[list(xs)].prod()
        res = engine.run(data)
        grad_j += p_d * res.value * score[list(xs)].sum(0)
        for part in partitions:
            r = removal_rewards(engine, data, part, res.value)
            expected[str(part)] += p_d * (r[:, None] * score[list(xs)]).sum(0)
        expected["metagrad"] += p_d * (res.metagrads.double()[:, None] * score[list(xs)]).sum(0)
    for part in partitions:
        assert (expected[str(part)] - grad_j).abs().max() <= 1e-10 * grad_j.abs().max(), part
    assert (expected["metagrad"] - grad_j).abs().max() > 1e-3 * grad_j.abs().max()
