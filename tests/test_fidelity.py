"""experiments/fidelity.py rests on two identities; both checked exactly here (float64, tiny GPT-2).

1. Weights mean multiplicity: SFT on a dataset equals SFT on each step's distinct documents weighted by their counts,
   and dΦ/dwᵢ equals the derivative with respect to the count of xᵢ's (document, step) — to 1e-10 relative.
2. The Rao-Blackwellised truth is unbiased: its expectation over the other N − 1 examples and the step equals ∇J
   computed by enumerating every dataset — to 1e-10 of ‖∇J‖.
"""

import itertools
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from test_engine import val_loss

from dpg import InnerSFTConfig, MetagradEngine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from fidelity import compact, cosine, rao_blackwell, zero_estimates  # noqa: E402

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
