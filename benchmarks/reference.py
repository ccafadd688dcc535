"""Independent references for the engine's metagradients: a full unroll in plain autograd and `higher` for SGD.

Written from the documented semantics (README "Inner SFT"), sharing no code with `dpg`: its own batching, per-token
losses via log_softmax + gather, its own AdamW, and `torch.autograd.grad(create_graph=True)` through every step, so
the whole graph of the run is kept (what the engine avoids). The exactness tests (tests/test_engine.py,
tests/test_estimators.py) compare the engine with it in float64; the cost benchmarks (metagrad_cost.py, gpu.py) time
it as the naive full unroll.
"""

import torch
from torch.func import functional_call


def batches(n, mb, ga, epochs, seed):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n, mb * ga):
            chunk = order[s:s + mb * ga]
            out.append([chunk[j:j + mb] for j in range(0, len(chunk), mb)])
    return out


def pad(examples, idx):
    width = max(len(examples[i]) for i in idx)
    ids = torch.zeros(len(idx), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, i in enumerate(idx):
        ids[r, :len(examples[i])] = torch.tensor(examples[i])
        mask[r, :len(examples[i])] = 1
    return ids, mask


def summed_token_losses(logits, ids, mask):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -(picked * mask[:, 1:]).sum(1)


def step_loss(forward, examples, step, w, normalization, max_length):
    """token_mean: Σ wᵢsᵢ / Σ wᵢnᵢ over the step (the weights enter the normaliser); official: Σ wᵢsᵢ/(L·B_mb)."""
    weighted_tokens = sum(w[i] * (len(examples[i]) - 1) for mb in step for i in mb)
    total = 0.0
    for mb in step:
        ids, mask = (t.to(w.device) for t in pad(examples, mb))
        s = summed_token_losses(forward(ids, mask), ids, mask)
        c = 1.0 / weighted_tokens if normalization == "token_mean" else 1.0 / (max_length * len(mb))
        total = total + (c * w[mb] * s).sum()
    return total


def unrolled(model, objective, examples, *, optimizer, lr, mb, ga, epochs=1, seed=0, betas=(0.9, 0.95), eps=1e-8,
             eps_root=1e-9, weight_decay=1e-4, momentum=0.0, normalization="token_mean", max_length=64, drop=()):
    """(Φ, dΦ/dw) by differentiating the whole unrolled run with autograd. `drop`: examples taken out of their
    microbatches (the schedule of the others unchanged; a step left empty still takes its optimizer step)."""
    names = [k for k, _ in model.named_parameters()]
    theta = [p.detach().clone().requires_grad_(True) for _, p in model.named_parameters()]  # leaves: θ₀ is constant
    w = torch.ones(len(examples), dtype=theta[0].dtype, device=theta[0].device, requires_grad=True)
    m = [torch.zeros_like(t) for t in theta]
    v = [torch.zeros_like(t) for t in theta]
    b1, b2 = betas
    for t, step in enumerate(batches(len(examples), mb, ga, epochs, seed), start=1):
        params = dict(zip(names, theta))
        forward = lambda ids, mask: functional_call(model, params, (ids,), {"attention_mask": mask}).logits  # noqa: E731
        step = [kept for kept in ([i for i in m if i not in drop] for m in step) if kept]
        if step:
            grads = torch.autograd.grad(step_loss(forward, examples, step, w, normalization, max_length), theta,
                                        create_graph=True)
        else:
            grads = [torch.zeros_like(x) for x in theta]
        if optimizer == "sgd":
            if momentum:
                m = [momentum * mi + g for mi, g in zip(m, grads)]
                theta = [x - lr * mi for x, mi in zip(theta, m)]
            else:
                theta = [x - lr * g for x, g in zip(theta, grads)]
        else:
            m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
            v = [b2 * vi + (1 - b2) * g ** 2 for vi, g in zip(v, grads)]
            theta = [x - lr * ((mi / (1 - b1 ** t)) / (((vi / (1 - b2 ** t)) + eps_root) ** 0.5 + eps) + weight_decay * x)
                     for x, mi, vi in zip(theta, m, v)]
    phi = objective(model, dict(zip(names, theta)))
    return phi.item(), torch.autograd.grad(phi, w, allow_unused=True, materialize_grads=True)[0]


def higher_sgd(model, objective, examples, *, lr, mb, ga, epochs=1, seed=0, normalization="token_mean", max_length=64):
    """dΦ/dw for plain SGD through `higher`'s monkey-patched differentiable optimizer."""
    import higher

    w = torch.ones(len(examples), dtype=next(model.parameters()).dtype, requires_grad=True)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True) as (fmodel, diffopt):
        for step in batches(len(examples), mb, ga, epochs, seed):
            forward = lambda ids, mask: fmodel(input_ids=ids, attention_mask=mask).logits  # noqa: E731
            diffopt.step(step_loss(forward, examples, step, w, normalization, max_length))
        names = [k for k, _ in model.named_parameters()]
        phi = objective(model, dict(zip(names, fmodel.parameters())))
        return phi.item(), torch.autograd.grad(phi, w)[0]
