"""The engine: inner SFT as pure functions and its exact metagradient (knows nothing of TRL, generators or configs).

`sft_config` (how the target is fine-tuned; torch-free) · `optim` (SGD / AdamW as pure functions with hand VJPs) ·
`sft` (schedule, weighted loss, step gradient) · `states` (where per-step states wait for the reverse pass) ·
`metagrad` (`MetagradEngine`: Φ after SFT and dΦ/dwᵢ for every example) · `graphs` (the step graphs the forward pass
keeps within inner_sft.graph_budget_mb) · `batched` (Φ for many weight vectors in one vectorised run).
"""
