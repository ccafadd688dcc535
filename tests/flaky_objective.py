"""An objective that fails on purpose, for the failure-policy tests (imported as `flaky_objective:...`)."""

import torch


def nan_after_sft(model, params):
    """Finite at the target's initial weights, so dpg's check before a run passes; nan once SFT has moved them."""
    w = params["lm_head.weight"]
    moved = (w - model.lm_head.weight.detach()).abs().sum()
    return w.mean() + torch.where(moved > 0, torch.nan, 0.0)
