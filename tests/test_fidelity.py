"""experiments/fidelity.py rests on two identities; both checked exactly here (float64, tiny GPT-2).

1. Weights mean multiplicity: SFT on a dataset equals SFT on each step's distinct documents weighted by their counts,
   and dΦ/dwᵢ equals the derivative with respect to the count of xᵢ's (document, step) — to 1e-10 relative.
2. The Rao-Blackwellised truth is unbiased: its expectation over the other N − 1 examples and the step equals ∇J
   computed by enumerating every dataset — to 1e-10 of ‖∇J‖.
"""

import itertools

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from test_engine import val_loss

from dpg import InnerSFTConfig, MetagradEngine
from experiments.fidelity import compact, cosine, rao_blackwell, zero_estimates

POOL = random_examples(3, min_len=4, max_len=9, seed=4)


def engine(optimizer, microbatch_size):
    cfg = InnerSFTConfig(optimizer=optimizer, lr=0.3 if optimizer == "sgd" else 2e-2, microbatch_size=microbatch_size,
                         max_length=16, shuffle=False, dtype=torch.float64)
    return MetagradEngine(tiny_gpt2(), val_loss, cfg)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_compact_dataset_equals_the_dataset(optimizer):
    x = torch.tensor([2, 0, 2, 2, 1, 1, 0, 1, 1])  # 3 steps of 3 examples, with repeats
    full = engine(optimizer, 3).run([POOL[k] for k in x.tolist()])
    items, W, item_of, d = compact(x, 3, POOL)
    small = engine(optimizer, d).run(items, W)
    assert small.value == pytest.approx(full.value, rel=1e-12)
    assert torch.allclose(small.metagrads[item_of], full.metagrads, rtol=1e-10, atol=0)


def test_rao_blackwell_truth_is_unbiased():
    pool = POOL[:2]
    N, M, K = 4, 2, len(pool)
    pi = torch.softmax(torch.tensor([0.3, -0.5], dtype=torch.float64), 0)
    score = torch.eye(K, dtype=torch.float64) - pi
    eng = engine("adamw", K)
    grad_j = torch.zeros(K, dtype=torch.float64)
    for xs in itertools.product(range(K), repeat=N):
        counts = torch.zeros(M, K, dtype=torch.float64)
        for pos, k in enumerate(xs):
            counts[pos // (N // M), k] += 1
        eng.cfg.microbatch_size = K
        grad_j += pi[list(xs)].prod() * eng.value(pool * M, counts.flatten()) * score[list(xs)].sum(0)
    expectation = torch.zeros(K, dtype=torch.float64)
    for m in range(M):  # the step of the integrated-out example, then the other N − 1 examples
        for xs in itertools.product(range(K), repeat=N - 1):
            counts = torch.zeros(M, K, dtype=torch.float64)
            slots = [s for s in range(N) if s != m * (N // M)]
            for pos, k in zip(slots, xs):
                counts[pos // (N // M), k] += 1
            expectation += pi[list(xs)].prod() / M * rao_blackwell(eng, pool, pi, score, counts, m, N)
    assert (expectation - grad_j).abs().max() <= 1e-10 * grad_j.abs().max()


def test_an_exactly_zero_estimate_has_cosine_zero_not_the_cosine_of_its_rounding_noise():
    """With one example per step metagrad's estimate is exactly 0 up to rounding (~1e-17); its cosine is 0."""
    truth = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    noise = torch.tensor([1e-17, -3e-17, 2e-17], dtype=torch.float64)  # points along the truth by chance
    assert cosine(noise, truth) == 0.0
    assert cosine(truth, truth) == pytest.approx(1.0, abs=1e-15)
    raw = {"metagrad": [noise.tolist(), (2 * noise).tolist()], "loo": [noise.tolist(), truth.tolist()]}
    assert zero_estimates(raw, truth) == ["metagrad"]


def test_horizon_model_recovers_the_cosine_of_an_average_of_k_estimates():
    """cos_k = μ·t / (|t| sqrt(|μ|² + V/k)) from moment estimates: the measured cosine of the k-average (many
    samples) matches it, an unbiased estimator's limit is 1, a biased one's is cos(μ, t)."""
    from experiments.fidelity_horizon import chunk_cosines, crossing, model

    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    truth_samples = t + 1e-3 * torch.randn(400, 4, generator=gen, dtype=torch.float64)
    bias = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)  # cos(bias, t) = 1/√2
    unbiased = t + 2.0 * torch.randn(20000, 4, generator=gen, dtype=torch.float64)  # V = 16: cos_1 = 1/√17
    biased = bias + 0.1 * torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    mu, mb = model(unbiased, truth_samples), model(biased, truth_samples)
    assert mu["limit"] == pytest.approx(1.0, abs=0.05) and mb["limit"] == pytest.approx(2 ** -0.5, abs=0.01)
    for k in (1, 16, 64):
        expected = 1 / (1 + 16 / k) ** 0.5
        assert mu["curve"][k] == pytest.approx(expected, abs=0.03)
        assert chunk_cosines(unbiased, t, k)[0] == pytest.approx(expected, abs=0.05)
    # the unbiased curve reaches the biased one's 1/√2 when 1 + 16/k = 2: k = 16
    assert crossing(mu, mb) == pytest.approx(16, rel=0.15)
    # per_step groups datasets into one step's estimate: 4 datasets a step is a quarter of the variance
    assert model(unbiased, truth_samples, per_step=4)["curve"][1] == pytest.approx(1 / (1 + 4) ** 0.5, abs=0.03)
