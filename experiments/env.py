"""The environment every study and benchmark runs in. Imported first by each script (`from experiments import env`),
before torch, transformers or dpg load, because the hub and tokenizers libraries read these variables at import.

- HF_HUB_OFFLINE: every model and tokenizer is embedded, cached or built from a config; a run never waits on the hub.
- WANDB_MODE=offline: a study's GRPO run logs to its own directory, never to a server.
- TOKENIZERS_PARALLELISM=false: no tokenizer thread pool, and no warning when a process forks after tokenizing.
Each is a default: a value already set in the environment wins.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def set_threads(n: int = 1) -> None:
    """torch's intra-op threads. One by default: the models are tiny and the machine a shared 2-core one, where two
    threads spin-wait on each other (one is 2-10x faster than two), and CPU time is then the work of the run itself."""
    import torch

    torch.set_num_threads(n)
