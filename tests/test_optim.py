"""The hand-written reverse-mode pieces of the engine against torch.func, in float64.

`opt.update_vjp` must equal `torch.func.vjp` of `opt.update` (≤ 1e-12 relative to the largest entry), at the first
step and after a few (bias corrections), for SGD with and without momentum and for AdamW with weight decay;
`hvp_and_dots` must equal torch.func's forward-over-reverse `jvp(grad(L))` (≤ 1e-10 relative).
"""

import pytest
import torch
from conftest import random_examples, tiny_gpt2
from torch.func import grad, jvp, vjp

from dpg.engine.metagrad import hvp_and_dots, prepare_target
from dpg.engine.optim import SGD, AdamW
from dpg.engine.sft import loss_weight_grad, make_schedule, microbatch_loss
from dpg.engine.sft_config import InnerSFTConfig

OPTIMIZERS = {
    "sgd": SGD(lr=0.3),
    "sgd_momentum": SGD(lr=0.3, momentum=0.9),
    "adamw": AdamW(lr=1e-2, eps_root=1e-9, weight_decay=0.1),
}


def close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return bool((a - b).abs().max() <= rtol * b.abs().max().clamp_min(1e-300))


def random_tree(gen, shapes, scale=1.0):
    return {k: scale * torch.randn(s, generator=gen, dtype=torch.float64) for k, s in shapes.items()}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("step", [0, 5])
def test_update_vjp_equals_torch_func_vjp(name, step):
    opt, gen = OPTIMIZERS[name], torch.Generator().manual_seed(step)
    shapes = {"w": (7, 5), "b": (5,)}
    params = random_tree(gen, shapes)
    state = {**opt.init(params), "step": step}
    tensors = {k: v for k, v in state.items() if k != "step"}
    if "v" in tensors:  # a realistic second moment: positive, of a gradient's squared scale
        tensors = {"m": random_tree(gen, shapes, 0.1), "v": {k: t.square() for k, t in random_tree(gen, shapes, 0.1).items()}}
    elif tensors:
        tensors = {"trace": random_tree(gen, shapes)}
    grads = random_tree(gen, shapes, 0.1)
    params_bar = random_tree(gen, shapes)
    state_bar = {key: random_tree(gen, shapes) for key in tensors}

    def update(g, s, p):
        new_params, new_state = opt.update(g, {"step": step, **s}, p)
        return new_params, {k: v for k, v in new_state.items() if k != "step"}

    expected = vjp(update, grads, tensors, params)[1]((params_bar, state_bar))
    got = opt.update_vjp(grads, {"step": step, **tensors}, params, params_bar, state_bar)
    for e_tree, g_tree in zip(expected, got):
        assert set(g_tree) == set(e_tree)
        for key in e_tree:
            e_leaves = e_tree[key] if isinstance(e_tree[key], dict) else {"": e_tree[key]}
            g_leaves = g_tree[key] if isinstance(g_tree[key], dict) else {"": g_tree[key]}
            for leaf in e_leaves:
                assert close(g_leaves[leaf], e_leaves[leaf], 1e-12), (name, key, leaf)


def test_hvp_and_dots_equal_forward_over_reverse():
    model = prepare_target(tiny_gpt2(), torch.float64)
    cfg = InnerSFTConfig(microbatch_size=3, grad_accum_steps=1, max_length=16, dtype=torch.float64)
    examples = random_examples(6, seed=3)
    mb = make_schedule(examples, cfg)[1].microbatches[0]
    params = {k: p.detach() for k, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    v = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in params.items()}
    w = torch.rand(len(examples), generator=gen, dtype=torch.float64) + 0.5

    hvp, dots = hvp_and_dots(model, params, mb, w, v)
    grad_and_losses = grad(microbatch_loss, argnums=1, has_aux=True)
    _, (hvp_ref, s_dots) = jvp(lambda p: grad_and_losses(model, p, mb, w), (params,), (v,))
    assert dots.shape == (6,)  # every example: the token-mean normaliser reaches the step's other rows
    assert close(dots, loss_weight_grad(mb, w, s_dots), 1e-10)
    for k in params:
        assert close(hvp[k], hvp_ref[k], 1e-10), k
