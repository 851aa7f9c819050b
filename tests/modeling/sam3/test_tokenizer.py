"""The SAM 3 BPE tokenizer against the official one.

``data/tokenizer_official.json`` holds the ids that the official ``SimpleTokenizer``
(facebookresearch/sam3, ``sam3/model/tokenizer_ve.py``, with ftfy 6.3.1 and regex installed)
returned for each text at context lengths 32 (SAM 3's), 77 (the default) and 5 (truncation); the
commit is in the file's ``source``. The texts cover punctuation, contractions, case, accents, CJK,
Cyrillic, Devanagari, Arabic, emoji, ligatures, full-width forms, curly quotes, HTML entities,
control and zero-width characters, terminal escapes, special-token strings, long prompts and the
empty prompt.
"""

import json
import os

import pytest
import torch

from segtrain.modeling.sam3 import DEFAULT_BPE_PATH, SimpleTokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return SimpleTokenizer()


@pytest.fixture(scope="module")
def official_cases():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tokenizer_official.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)["cases"]


def test_ids_equal_the_official_tokenizer(tokenizer, official_cases):
    assert len(official_cases) > 100
    for case in official_cases:
        ids = tokenizer(case["text"], context_length=case["context_length"])
        assert ids.dtype == torch.long and ids.shape == (1, case["context_length"])
        assert ids[0].tolist() == case["ids"], (case["text"], case["context_length"])


def test_batch_layout_and_special_tokens(tokenizer):
    ids = tokenizer(["a red car", "", "word " * 50], context_length=32)
    assert ids.shape == (3, 32)
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    assert (sot, eot, tokenizer.vocab_size) == (49406, 49407, 49408)
    assert ids[0, :5].tolist() == [sot, 320, 736, 1615, eot] and ids[0, 5:].eq(0).all()
    assert ids[1, :3].tolist() == [sot, eot, 0]
    assert ids[2, 0] == sot and ids[2, -1] == eot and ids[2].ne(0).all()


def test_cleaning_lowercase_whitespace_and_decode(tokenizer):
    assert tokenizer.encode("A  RED\n\tCar") == tokenizer.encode("a red car")
    assert tokenizer.encode("ﬁsh") == tokenizer.encode("fish")
    assert tokenizer.encode("&amp;") == tokenizer.encode("&")
    assert tokenizer.decode(tokenizer.encode("traffic light, 2 cars")) == "traffic light , 2 cars "


def test_context_length_default_and_override():
    tok = SimpleTokenizer(context_length=10)
    assert tok("cat").shape == (1, 10)
    assert tok("cat", context_length=4).shape == (1, 4)


def test_bad_input_is_a_clear_error(tokenizer, tmp_path):
    with pytest.raises(TypeError, match="prompts must be str"):
        tokenizer(["cat", 3])
    with pytest.raises(ValueError, match="context_length"):
        tokenizer("cat", context_length=1)
    broken = tmp_path / "vocab.txt.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=str(broken)):
        SimpleTokenizer(bpe_path=str(broken))
    with pytest.raises(ValueError, match="clean='upper'"):
        SimpleTokenizer(clean="upper")


def test_vocabulary_ships_with_the_package():
    assert os.path.isfile(DEFAULT_BPE_PATH)
    assert DEFAULT_BPE_PATH.endswith(os.path.join("segtrain", "modeling", "sam3", "bpe_simple_vocab_16e6.txt.gz"))
