"""The byte-level BPE tokenizer of SAM 3's text encoder (the CLIP vocabulary).

Text is cleaned (``text_cleaning``), split into words, runs of punctuation, single digits and
English contractions, each piece is mapped byte by byte to printable characters and merged by
the ranked BPE merges of ``bpe_simple_vocab_16e6.txt.gz``. A prompt becomes
``[<start_of_text>, ids..., <end_of_text>]`` padded with 0 to the context length; a longer one
is cut and its last id replaced by ``<end_of_text>``.
"""

import gzip
import os
import re
import unicodedata
from functools import lru_cache
from typing import List, Optional, Sequence, Union

import torch

from .text_cleaning import WHITESPACE, get_clean_fn

__all__ = ["SimpleTokenizer", "DEFAULT_BPE_PATH", "DEFAULT_CONTEXT_LENGTH", "bytes_to_unicode"]

DEFAULT_CONTEXT_LENGTH = 77
DEFAULT_BPE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bpe_simple_vocab_16e6.txt.gz")
# 49152 ids minus the 256 byte symbols, their 256 end-of-word forms and the 2 special tokens.
_NUM_MERGES = 49152 - 256 - 2
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_IS_WHITESPACE = re.compile(f"[{WHITESPACE}]")
# The official split is a case-insensitive ``regex`` pattern; under its case folding U+017F
# (long s) matches the "s" of "'s", and U+0345 (whose case partners are Greek iota) belongs
# neither to the letters nor to their complement, so it is dropped.
_FOLD_FOR_CONTRACTIONS = str.maketrans({"\u017f": "s"})
_UNMATCHED = "\u0345"


@lru_cache()
def bytes_to_unicode():
    """Byte value -> printable character; printable Latin-1 bytes map to themselves, the others
    to code points from 256 on, so no byte becomes whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, [chr(c) for c in chars]))


def _char_class(char):
    if char == _UNMATCHED or _IS_WHITESPACE.match(char):
        return " "
    category = unicodedata.category(char)[0]
    return category if category in "LN" else "P"


def split_words(text: str, special_tokens: Sequence[str]) -> List[str]:
    """Pre-tokenization: special tokens, contractions, letter runs, single digits, runs of
    other non-space characters (case-insensitive, whitespace dropped)."""
    pieces = []
    # Lower-cased char by char so that indices stay aligned with ``text``.
    lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text).translate(_FOLD_FOR_CONTRACTIONS)
    i = 0
    while i < len(text):
        special = next((t for t in special_tokens if lowered.startswith(t.lower(), i)), None)
        contraction = next((c for c in _CONTRACTIONS if lowered.startswith(c, i)), None)
        kind = _char_class(text[i])
        if special is not None or contraction is not None:
            end = i + len(special if special is not None else contraction)
        elif kind == " ":
            i += 1
            continue
        elif kind == "N":
            end = i + 1
        else:
            end = i + 1
            while end < len(text) and _char_class(text[end]) == kind:
                end += 1
        pieces.append(text[i:end])
        i = end
    return pieces


def _pairs(word):
    return set(zip(word[:-1], word[1:]))


class SimpleTokenizer:
    """BPE tokenizer; ``tokenizer(texts, context_length=None)`` -> LongTensor [N, context_length]."""

    def __init__(
        self,
        bpe_path: Union[str, os.PathLike, None] = None,
        additional_special_tokens: Optional[List[str]] = None,
        context_length: Optional[int] = DEFAULT_CONTEXT_LENGTH,
        clean: str = "lower",
    ):
        bpe_path = DEFAULT_BPE_PATH if bpe_path is None else bpe_path
        try:
            with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except (OSError, EOFError) as e:
            raise ValueError(f"BPE vocabulary {bpe_path}: cannot be read as a gzipped text file ({e})") from None
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"BPE vocabulary {bpe_path}: expected {_NUM_MERGES} merge lines of two symbols")
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        special_tokens = ["<start_of_text>", "<end_of_text>", *(additional_special_tokens or [])]
        vocab += special_tokens
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.special_tokens = special_tokens
        self.cache = {t: t for t in special_tokens}
        self.vocab_size = len(self.encoder)
        self.all_special_ids = [self.encoder[t] for t in special_tokens]
        self.sot_token_id, self.eot_token_id = self.all_special_ids[:2]
        self.context_length = context_length
        self.clean_fn = get_clean_fn(clean)

    def bpe(self, token: str) -> str:
        """Space-separated BPE symbols of one pre-token (already byte-mapped)."""
        if token in self.cache:
            return self.cache[token]
        word = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        while pairs:
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged = []
            i = 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            pairs = _pairs(word) if len(word) > 1 else set()
        result = " ".join(word)
        self.cache[token] = result
        return result

    def encode(self, text: str) -> List[int]:
        """Token ids of one text, without start / end tokens."""
        ids = []
        for piece in split_words(self.clean_fn(text), self.special_tokens):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(mapped).split(" "))
        return ids

    def decode(self, tokens: Sequence[int]) -> str:
        text = "".join(self.decoder[int(t)] for t in tokens)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", errors="replace").replace("</w>", " ")

    def __call__(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None) -> torch.Tensor:
        """Token ids [N, context_length] (int64), zero-padded; texts longer than the context are
        truncated with ``<end_of_text>`` kept as the last id."""
        if isinstance(texts, str):
            texts = [texts]
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TypeError(f"tokenizer: prompts must be str, got {type(bad).__name__} {bad!r}")
        context_length = context_length or self.context_length
        if not isinstance(context_length, int) or context_length < 2:
            raise ValueError(f"tokenizer: context_length={context_length!r} must be an int >= 2")
        result = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            result[row, : len(ids)] = torch.tensor(ids)
        return result
