"""Every kind of input a user can type or damage ends in exit 0, or in one clear line and
exit 2, and nothing saved is lost: one named test per kind of failure that was found
(tests/test_generated_input.py searches for new ones)."""

import pytest
import torch
from runs import TEXT, assert_clean, run, trained_run  # noqa: F401

from transformer.data import WordTokenizer, split


# ---- the word tokenizer ----------------------------------------------------------------------
def test_the_word_tokenizer_cuts_train_from_validation_between_two_words():
    text = "lorem ipsum " * 100 + "dolor"
    cut = int(len(text) * 0.9)
    assert text[cut - 1].isalpha() and text[cut].isalpha()  # 90% of the characters ends inside a word
    tokenizer = WordTokenizer.learn(text)
    splits = split(text, tokenizer, block_size=8)  # was a KeyError: the half word is not in the vocabulary
    assert torch.equal(torch.cat([splits.train, splits.val]), torch.tensor(tokenizer.encode(text)))
    assert tokenizer.decode(splits.train).endswith("ipsum ") and len(tokenizer.decode(splits.train)) <= cut
