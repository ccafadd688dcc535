import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models: one thread is faster than two (thread start-up outweighs the work), and subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config


def tiny_gpt2(vocab_size=64, n_layer=2, n_embd=16, n_head=2, n_positions=64, seed=0, dtype=torch.float64):
    """A GPT-2 with an untied head, no dropout, eager attention (double backward and forward-mode AD need it)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").to(dtype).eval()
    with torch.no_grad():  # GPT-2's init is tiny (std 0.02); larger weights make the Hessian terms matter in tests
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, whatever the environment says: tiny models gain nothing from a second
    thread, and on a busy 2-core machine two threads spin-wait on each other (a LoRA dry run: 2 s with one thread,
    14 s with two under load 10)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_target():
    return tiny_gpt2()


def random_examples(n, vocab_size=64, min_len=3, max_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(min_len, max_len + 1, (n,), generator=g).tolist()
    return [torch.randint(1, vocab_size, (L,), generator=g).tolist() for L in lens]
