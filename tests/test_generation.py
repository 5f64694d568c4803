"""Generation: the layers' caches give what recomputing the context gives (every layer type,
a mixed stack, a layer of your own without a cache, past block_size), the API's text is the
same streamed or whole, cached or not, and every bad sampling value is a one-line error."""

import math

import pytest
import torch

import tinygraph as tg
from transformer import UserError
from transformer import config as cfg
from transformer.api import TrainedModel
from transformer.data import CharTokenizer
from transformer.generation import Sampling, tokens, window_start
from transformer.model import LanguageModel

VOCAB = "abcdefgh .\n"
BLOCK = 8

STACKS = {
    "transformer": [{"type": "PositionalEmbedding"}, {"type": "Block", "heads": 2, "repeat": 2}],
    "attention": [{"type": "PositionalEmbedding"}, {"type": "MultiHeadSelfAttention", "heads": 2}],
    "rnn": [{"type": "RNN", "hidden": 12}],
    "lstm": [{"type": "LSTM", "hidden": 12, "repeat": 2}],
    "gru": [{"type": "GRU", "hidden": 12}],
    "mixed": [
        {"type": "PositionalEmbedding"},
        {"type": "Block", "heads": 2},
        {"type": "LSTM", "hidden": 16},
        {"type": "GRU", "hidden": 16},
        {"type": "Block", "heads": 4},
        {"type": "RNN", "hidden": 12},
    ],
    # a layer of your own that keeps no cache: recomputed over the window, the rest cached
    "own layer": [
        {"type": "PositionalEmbedding"},
        {"type": "{dir}/shift.py:PreviousToken"},
        {"type": "GRU", "hidden": 12},
    ],
}

OWN_LAYER = '''
from tinygraph import cat, nn


class PreviousToken(nn.Module):
    """x_t + W x_(t-1): causal, but not position-wise, and without forward_cached."""

    def __init__(self, width: int):
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, x):
        before = cat([x[:, :1] * 0, x[:, :-1]], 1)
        return x + self.mix(before)
'''


def build(stack: str, tmp_path, dtype=torch.float64, dropout=0.1) -> LanguageModel:
    (tmp_path / "shift.py").write_text(OWN_LAYER)
    layers = [{**t, "type": t["type"].format(dir=tmp_path)} for t in STACKS[stack]]
    layers = [
        {"type": "Embedding", "dim": 16},
        *layers,
        {"type": "LayerNorm"},
        {"type": "TemporalDense", "out": "vocab"},
    ]
    text = f"[model]\nblock_size = {BLOCK}\ndropout = {dropout}\n"
    for table in [*layers, {"type": "CrossEntropyLoss"}]:
        text += "[[layers]]\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in table.items())
    torch.manual_seed(0)
    return LanguageModel(cfg.parse(text, stack), len(VOCAB)).to(dtype)


class TeacherForcing:
    """A sampling rule that notes the logits it is given and answers a fixed sequence."""

    def __init__(self, answers):
        self.answers, self.seen = iter(answers), []

    def pick(self, logits, generator=None):
        self.seen.append(logits.clone())
        return torch.full((logits.shape[0],), next(self.answers), dtype=torch.long)


@pytest.mark.parametrize("stack", list(STACKS))
def test_the_caches_give_what_recomputing_the_window_gives_past_block_size(stack, tmp_path):
    model = build(stack, tmp_path)
    model.train()  # generation runs in eval mode (no dropout) whatever the mode, and gives it back
    steps = 3 * BLOCK + 3  # the window moves several times
    answers = torch.randint(len(VOCAB), (steps,), generator=torch.Generator().manual_seed(1)).tolist()
    prompt = torch.tensor([[1, 2, 3]])
    cached, recomputed = TeacherForcing(answers), TeacherForcing(answers)
    list(tokens(model, prompt, steps, cached, use_cache=True))
    list(tokens(model, prompt, steps, recomputed, use_cache=False))
    assert model.training and len(cached.seen) == steps
    for a, b in zip(cached.seen, recomputed.seen):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # and recomputing means the model's own forward over the window, as training runs it
    seq = torch.cat([prompt[0], torch.tensor(answers)])
    model.eval()
    for i, logits in enumerate(recomputed.seen):
        end = len(prompt[0]) + i
        window = seq[window_start(end, BLOCK) : end]
        torch.testing.assert_close(logits[0], model(tg.Tensor(window[None]))[0].data[0, -1])


@pytest.mark.parametrize("stack", ["transformer", "mixed"])
def test_float32_sampled_text_is_the_same_cached_or_not(stack, tmp_path):
    model = build(stack, tmp_path, torch.float32)
    prompt = tg.Tensor(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    texts = [
        model.generate(prompt, 30, 1.0, top_k=5, generator=torch.Generator().manual_seed(3), use_cache=c).data
        for c in (True, False)
    ]
    assert torch.equal(*texts) and texts[0].shape == (2, 33)


def test_the_window_moves_in_strides_of_a_quarter_context():
    assert [window_start(n, 8) for n in (1, 8, 9, 10, 11, 12)] == [0, 0, 2, 2, 4, 4]
    starts = [window_start(n, 256) for n in range(1, 1000)]
    assert set(starts) == set(range(0, 769, 64)) and all(
        193 <= n - s <= 256 for n, s in zip(range(257, 1000), starts[256:])
    )
    assert [window_start(n, 3) for n in (3, 4, 5)] == [0, 1, 2]  # nanoGPT's window, when a quarter is < 1 token


def trained_model(tmp_path, stack="mixed") -> TrainedModel:
    model = build(stack, tmp_path, torch.float32, dropout=0.0)
    return TrainedModel(tmp_path, {"config": model.config}, CharTokenizer(list(VOCAB)), model)


def test_streamed_is_whole_cached_is_uncached_and_a_seed_repeats(tmp_path):
    m = trained_model(tmp_path)
    whole = m.generate("abc", max_new_tokens=40, temperature=1.0, top_p=0.9, seed=5)
    pieces = list(m.generate("abc", max_new_tokens=40, temperature=1.0, top_p=0.9, seed=5, stream=True))
    uncached = m.generate("abc", max_new_tokens=40, temperature=1.0, top_p=0.9, seed=5, use_cache=False)
    assert len(pieces) == 40 and "".join(pieces) == whole == uncached
    assert set(whole) <= set(VOCAB)
    assert m.generate("abc", 40, temperature=1.0, seed=6) != whole  # another seed, another text


def test_greedy_is_deterministic_and_a_tiny_temperature_is_greedy(tmp_path):
    m = trained_model(tmp_path)
    greedy = m.generate("ab", max_new_tokens=25, temperature=0)
    assert m.generate("ab", max_new_tokens=25, temperature=0, seed=1) == greedy
    assert m.generate("ab", max_new_tokens=25, temperature=0, use_cache=False) == greedy
    for tiny in (1e-40, 1e-300, 5e-324):
        assert m.generate("ab", max_new_tokens=25, temperature=tiny, seed=2) == greedy


def test_top_k_and_top_p_keep_the_likeliest_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    gen = torch.Generator().manual_seed(0)
    draws = lambda s: {int(s.pick(logits, gen)) for _ in range(300)}  # noqa: E731
    assert draws(Sampling(1.0, top_k=2)) == {0, 1}
    assert draws(Sampling(1.0, top_p=0.5)) == {0}
    assert draws(Sampling(1.0, top_p=0.8)) == {0, 1}  # 0.5 + 0.3 reaches 0.8
    assert draws(Sampling(1.0, top_p=0.81)) == {0, 1, 2}
    assert draws(Sampling(1.0)) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature": -0.5}, "temperature = -0.5 is out of range; it must be a number of at least 0"),
        ({"temperature": math.nan}, "temperature = nan is out of range"),
        ({"temperature": "hot"}, "temperature = 'hot' is out of range"),
        ({"top_p": 0.0}, "top_p = 0.0 is out of range; it must be a number in (0, 1]"),
        ({"top_p": 1.5}, "top_p = 1.5 is out of range"),
        ({"top_p": math.nan}, "top_p = nan is out of range"),
        ({"top_k": 0}, "top_k = 0 is out of range; it must be a positive integer"),
        ({"top_k": 2.5}, "top_k = 2.5 is out of range"),
        ({"max_new_tokens": -1}, "max_new_tokens = -1 is out of range"),
        ({"seed": 2**64}, "does not fit in 64 bits"),
        ({"prompt": "abc€"}, "holds '€', which the model never saw"),
        ({"prompt": ""}, "is empty"),
    ],
)
def test_every_bad_sampling_value_is_a_one_line_error(tmp_path, kwargs, message):
    m = trained_model(tmp_path, "rnn")
    args = {"prompt": "abc", "max_new_tokens": 5, **kwargs}
    for stream in (False, True):  # refused when called, not when the first piece is asked for
        with pytest.raises(UserError) as err:
            m.generate(**args, stream=stream)
        assert message in str(err.value) and len(str(err.value).splitlines()) == 1


def test_score_is_the_loss_per_token_in_nats_and_bits(tmp_path):
    m = trained_model(tmp_path, "transformer")
    text = "abc defg hab.\nab" * 3 + "a"  # 48 tokens to predict: six windows
    score = m.score(text)
    assert score.tokens == len(text) - 1 and score.characters == len(text) - 1
    ids = torch.tensor([CharTokenizer(list(VOCAB)).encode(text)])
    with tg.no_grad():
        m.model.eval()
        losses = [m.model(tg.Tensor(ids[:, s : s + BLOCK]), tg.Tensor(ids[:, s + 1 : s + 1 + BLOCK]))[1].item()
                  for s in range(0, len(text) - 1 - BLOCK + 1, BLOCK)]  # fmt: skip
    assert len(text) - 1 == len(losses) * BLOCK  # windows side by side cover every token once
    assert score.loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    assert score.bits_per_token == pytest.approx(score.loss / math.log(2))
    assert score.bits_per_char == pytest.approx(score.bits_per_token)  # one character per token
    with pytest.raises(UserError, match="fewer than two tokens"):
        m.score("a")
