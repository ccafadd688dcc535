"""Objectives on what the fine-tuned target says: `text_loss` (held-out LM loss) and `target_string` (e.g. a UUID).

Every text becomes one token sequence plus a mask of the positions that are scored. Tokenisation happens once, at
construction; each call runs the cached, right-padded batches through the target with the fine-tuned params.

Prompt + completion is tokenised as one string (so the tokens are those the model would see in running text), and a
token is scored when it ends after the prompt's last character (tokenizer offsets; needs a fast tokenizer). If no
token precedes the first scored one (empty prompt and a tokenizer that adds no BOS), the tokenizer's BOS token is
put in front, or its EOS token if it has no BOS.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call

MODES = ("full", "last_word", "completion")


def load_tokenizer(tokenizer=None, tokenizer_path: str | None = None):
    if (tokenizer is None) == (tokenizer_path is None):
        raise ValueError("tokenizer/tokenizer_path: pass exactly one (the target's tokenizer, or a path to it); "
                         f"got tokenizer={type(tokenizer).__name__ if tokenizer is not None else None}, "
                         f"tokenizer_path={tokenizer_path!r}")
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as e:
        raise ValueError(f"tokenizer_path: cannot load a tokenizer from {tokenizer_path!r}: {e}") from e


def _read_records(path, field: str, split: str | None, limit: int | None):
    """At most `limit` records (dicts) of a .jsonl file or saved dataset; a .txt file's lines become {field: line}."""
    p = Path(path)
    if p.is_dir():
        import datasets
        data = datasets.load_from_disk(str(p))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                raise ValueError(f"split: {str(p)!r} holds splits {list(data)}; choose one, got {split!r}")
            data = data[split]
        return data.select(range(min(limit, len(data)))) if limit is not None else data
    if p.suffix not in (".txt", ".jsonl") or not p.is_file():
        raise ValueError(f"path: {str(p)!r} is not an existing .txt file, .jsonl file or saved dataset directory")
    with open(p, encoding="utf-8") as f:
        lines = [(n, line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.strip()][:limit]
    if p.suffix == ".txt":
        return [{field: line} for _, line in lines]
    records = []
    for n, line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"path: line {n} of {str(p)!r} is not valid JSON: {e}") from None
    return records


def load_texts(texts=None, path: str | None = None, field: str = "text", pair_fields=None, split: str | None = None,
               max_texts: int | None = None) -> list:
    """Texts (str) or (prompt, completion) pairs from a list, a .txt (one per line, blank lines skipped), a .jsonl
    file or a directory saved by `datasets` (`save_to_disk`). Records are read by `field`, or by the two names in
    `pair_fields` for pairs."""
    if (texts is None) == (path is None):
        raise ValueError(f"texts/path: pass exactly one, got texts={'a list' if texts is not None else None}, "
                         f"path={path!r}")
    if isinstance(texts, str):
        raise ValueError("texts: expected a list of strings or pairs, got a single string; for a file use path=")
    if pair_fields is not None and (len(pair_fields) != 2 or not all(isinstance(f, str) for f in pair_fields)):
        raise ValueError(f"pair_fields: expected two field names [prompt, completion], got {pair_fields!r}")
    if max_texts is not None and (isinstance(max_texts, bool) or not isinstance(max_texts, int) or max_texts < 1):
        raise ValueError(f"max_texts: expected an integer ≥ 1 or None, got {max_texts!r}")
    if path is not None:
        keys = list(pair_fields) if pair_fields is not None else [field]
        texts = []
        for i, rec in enumerate(_read_records(path, field, split, max_texts)):
            if not isinstance(rec, dict):
                raise ValueError(f"path: record {i} of {str(path)!r} is a {type(rec).__name__}, not a JSON object")
            missing = [k for k in keys if k not in rec]
            if missing:
                raise ValueError(f"field/pair_fields: record {i} of {str(path)!r} has no field {missing[0]!r} "
                                 f"(it has {sorted(rec)})")
            texts.append(tuple(rec[k] for k in keys) if pair_fields is not None else rec[field])
    texts = list(texts)[:max_texts]
    if not texts:
        raise ValueError("texts: no texts to score (empty list or file)")
    for i, t in enumerate(texts):
        ok = isinstance(t, str) or (isinstance(t, (tuple, list)) and len(t) == 2 and all(isinstance(s, str) for s in t))
        if not ok or isinstance(t, str) != isinstance(texts[0], str):
            raise ValueError(f"texts[{i}]: expected all strings or all (prompt, completion) pairs, got {t!r}")
    return [t if isinstance(t, str) else tuple(t) for t in texts]


def split_last_word(text: str) -> tuple[str, str]:
    """LAMBADA form: ("all words but the last", " " + last word)."""
    words = text.split()
    if len(words) < 2:
        raise ValueError(f"mode: 'last_word' needs at least two words, got {text!r}")
    stripped = text.rstrip()
    return stripped[:len(stripped) - len(words[-1])].rstrip(), " " + words[-1]


def encode(tokenizer, prompt: str, completion: str, max_length: int | None, label: str) -> tuple[list[int], list[bool]]:
    """(token ids, scored) for `prompt + completion` with only the completion's tokens scored. See module docstring."""
    try:
        enc = tokenizer(prompt + completion, return_offsets_mapping=True)
    except NotImplementedError as e:
        raise ValueError("tokenizer: scoring a completion needs token offsets, i.e. a fast tokenizer "
                         f"(PreTrainedTokenizerFast), got {type(tokenizer).__name__}") from e
    ids = list(enc["input_ids"])
    # Special tokens have offsets (0, 0), so a BOS is never scored and neither is an EOS the tokenizer appends.
    scored = [end > len(prompt) for _, end in enc["offset_mapping"]]
    if not any(scored):
        raise ValueError(f"{label}: the completion {completion!r} gives no tokens to score")
    if scored[0]:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError(f"{label}: the prompt is empty and the tokenizer has neither a BOS nor an EOS token to "
                             "condition on; give a non-empty prompt")
        ids, scored = [start] + ids, [False] + scored
    if max_length is not None and len(ids) > max_length:
        ids, scored = ids[-max_length:], scored[-max_length:]  # drop the oldest context: the completion must stay
        if scored[0]:
            raise ValueError(f"{label}: max_length={max_length} leaves no context before the completion")
    return ids, scored


def encode_full(tokenizer, text: str, max_length: int | None, label: str) -> tuple[list[int], list[bool]]:
    """(token ids, scored) for a whole text: every token but the first (which has no context) is scored."""
    ids = list(tokenizer(text)["input_ids"])[:max_length]
    if len(ids) < 2:
        raise ValueError(f"{label}: {text!r} has {len(ids)} token(s) (max_length={max_length}); "
                         "next-token loss needs at least 2")
    return ids, [False] + [True] * (len(ids) - 1)


def collate(encoded: list[tuple[list[int], list[bool]]], batch_size: int, pad_id: int) -> list[tuple]:
    """Right-padded batches (input_ids, attention_mask, scored); `scored[b, t]` marks input_ids[b, t] as a target."""
    batches = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        scored = torch.zeros(len(chunk), width, dtype=torch.bool)
        for r, (seq, sc) in enumerate(chunk):
            ids[r, :len(seq)] = torch.tensor(seq)
            mask[r, :len(seq)] = 1
            scored[r, :len(seq)] = torch.tensor(sc)
        batches.append((ids, mask, scored))
    return batches


class ScoredTokens:
    """Φ = −(mean cross-entropy over all scored tokens of all texts). Proxies: `loss`, `token_accuracy`."""

    def __init__(self, encoded: list[tuple[list[int], list[bool]]], batch_size: int, pad_id: int):
        self.batches = collate(encoded, batch_size, pad_id)
        self.n_scored = sum(sum(sc) for _, sc in encoded)

    def _sums(self, model, params) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed cross-entropy, number of argmax hits) over the scored tokens."""
        device = next(iter(params.values())).device
        loss, hits = 0.0, 0
        for ids, mask, scored in self.batches:
            ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
            logits = functional_call(model, params, (), {"input_ids": ids, "attention_mask": mask}).logits[:, :-1]
            targets, sc = ids[:, 1:], scored[:, 1:]
            ce = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
            loss = loss + (ce * sc.to(ce.dtype)).sum()
            hits = hits + ((logits.argmax(-1) == targets) & sc).sum()
        return loss, hits

    def __call__(self, model, params):
        return -self._sums(model, params)[0] / self.n_scored

    def proxies(self, model, params) -> dict[str, float]:
        with torch.no_grad():
            loss, hits = self._sums(model, params)
            return {"loss": float(loss) / self.n_scored, "token_accuracy": float(hits) / self.n_scored}


def _check_int(key, val, minimum, allow_none=False):
    if allow_none and val is None:
        return
    if isinstance(val, bool) or not isinstance(val, int) or val < minimum:
        raise ValueError(f"{key}: expected an integer ≥ {minimum}{' or None' if allow_none else ''}, got {val!r}")


class TextLoss(ScoredTokens):
    """Φ = −(mean per-token LM loss of the target on a set of texts).

    mode "full": every token of each text (but the first); "last_word": only " " + the last word, the rest is the
    prompt (LAMBADA); "completion": (prompt, completion) pairs, only the completion. Default: "completion" for
    pairs, else "full".
    """

    def __init__(self, texts=None, path: str | None = None, field: str = "text", pair_fields=None,
                 split: str | None = None, mode: str | None = None, tokenizer=None, tokenizer_path: str | None = None,
                 max_length: int | None = None, max_texts: int | None = None, batch_size: int = 8):
        _check_int("max_length", max_length, 2, allow_none=True)
        _check_int("batch_size", batch_size, 1)
        items = load_texts(texts, path, field, pair_fields, split, max_texts)
        pairs = not isinstance(items[0], str)
        mode = mode if mode is not None else ("completion" if pairs else "full")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        if (mode == "completion") != pairs:
            needs = "(prompt, completion) pairs" if mode == "completion" else "plain texts"
            raise ValueError(f"mode: {mode!r} needs {needs}, but got {'pairs' if pairs else 'plain texts'}")
        tok = load_tokenizer(tokenizer, tokenizer_path)
        encoded = []
        for i, item in enumerate(items):
            if mode == "full":
                encoded.append(encode_full(tok, item, max_length, f"texts[{i}]"))
            else:
                prompt, completion = split_last_word(item) if mode == "last_word" else item
                encoded.append(encode(tok, prompt, completion, max_length, f"texts[{i}]"))
        self.mode = mode
        super().__init__(encoded, batch_size, tok.pad_token_id if tok.pad_token_id is not None else 0)


class TargetString(ScoredTokens):
    """Φ = −(mean per-token loss of `string` after `prompt`). An empty prompt scores the string after the
    tokenizer's BOS (or its EOS if it has no BOS). Proxies: `loss`, `token_accuracy`, `exact_match`."""

    def __init__(self, string: str, prompt: str = "", tokenizer=None, tokenizer_path: str | None = None):
        if not isinstance(string, str) or not string:
            raise ValueError(f"string: expected a non-empty string, got {string!r}")
        if not isinstance(prompt, str):
            raise ValueError(f"prompt: expected a string (may be empty), got {prompt!r}")
        tok = load_tokenizer(tokenizer, tokenizer_path)
        ids, scored = encode(tok, prompt, string, None, "string")
        first = scored.index(True)
        self.context, self.target_ids = ids[:first], [t for t, s in zip(ids, scored) if s]
        super().__init__([(ids, scored)], 1, 0)

    def greedy_matches(self, model, params) -> bool:
        """Does greedy decoding from the prompt with the fine-tuned params reproduce the string's tokens?"""
        device = next(iter(params.values())).device
        seq = torch.tensor([self.context], device=device)
        with torch.no_grad():
            for want in self.target_ids:
                logits = functional_call(model, params, (), {"input_ids": seq, "attention_mask": torch.ones_like(seq)})
                nxt = int(logits.logits[0, -1].argmax())
                if nxt != want:  # greedy is deterministic: the first wrong token decides
                    return False
                seq = torch.cat([seq, seq.new_tensor([[nxt]])], dim=1)
        return True

    def proxies(self, model, params) -> dict[str, float]:
        return {**super().proxies(model, params), "exact_match": float(self.greedy_matches(model, params))}
