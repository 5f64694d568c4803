"""Convolutional networks built from tinygraph.nn train, and their grads equal those of a
torch twin holding the same weights (float64, torch.autograd): a small image CNN
(conv2d, pooling, a linear head) on bars, and a causal 1-d CNN language layer (a tiny
WaveNet/ByteNet: embedding, a stack of dilated causal convolutions, a linear head)."""

import math

import torch
import torch.nn as tnn

import tinygraph as tg
import tinygraph.nn as nn
import tinygraph.nn.functional as F


def assert_same_grads(ours, theirs, inputs, target):
    """One float64 cross-entropy step through both: equal loss, equal grad of every parameter."""
    ours.to(torch.float64)
    theirs.double()
    theirs.load_state_dict(ours.state_dict())
    loss = F.cross_entropy(ours(tg.Tensor(inputs)).flatten(0, -2), tg.Tensor(target).flatten())
    loss_t = tnn.functional.cross_entropy(theirs(inputs).flatten(0, -2), target.flatten())
    loss.backward()
    loss_t.backward()
    torch.testing.assert_close(loss.data, loss_t.detach(), rtol=1e-12, atol=0)
    theirs_params = dict(theirs.named_parameters())
    assert set(dict(ours.named_parameters())) == set(theirs_params)
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad.data, theirs_params[name].grad, rtol=1e-9, atol=1e-12, msg=name)


def train(model, batches, steps, lr):
    optimizer = tg.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        inputs, target = batches(step)
        loss = F.cross_entropy(model(inputs).flatten(0, -2), target.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


# ---- a small image CNN: horizontal or vertical bars ------------------------------------------------------------


def bars(n, generator):
    """n noisy 8x8 images (N, 1, 8, 8), each a bar of 3-6 pixels across a random row (class 0)
    or down a random column (class 1)."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = 0.2 * torch.randn(n, 1, 8, 8, generator=generator)
    for i in range(n):
        line, start = torch.randint(0, 8, (2,), generator=generator).tolist()
        length = int(torch.randint(3, 7, (1,), generator=generator))
        cells = slice(min(start, 8 - length), min(start, 8 - length) + length)
        if labels[i] == 0:
            images[i, 0, line, cells] += 1.0
        else:
            images[i, 0, cells, line] += 1.0
    return images, labels


def small_cnn(nn, classes=2, width=8):
    """conv 3x3 -> relu -> max pool 2 -> conv 3x3 -> relu -> global average pool -> linear,
    written once for tinygraph.nn and torch.nn (the same names)."""

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, width, 3, padding=1)
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(width, width, 3, padding="same")
            self.squeeze = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(width, classes)

        def forward(self, images):
            x = self.pool(self.conv1(images).relu())
            x = self.squeeze(self.conv2(x).relu())
            return self.head(x.flatten(1))

    return SmallCNN()


def test_small_cnn_grads_equal_torchs():
    torch.manual_seed(0)
    images, labels = bars(16, torch.Generator().manual_seed(1))
    assert_same_grads(small_cnn(nn), small_cnn(tnn), images.double(), labels)


def test_small_cnn_learns_to_tell_horizontal_from_vertical_bars():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = small_cnn(nn)
    losses = train(model, lambda step: tuple(map(tg.Tensor, bars(32, gen))), steps=40, lr=0.03)
    images, labels = bars(200, torch.Generator().manual_seed(123))
    with tg.no_grad():
        accuracy = (model(tg.Tensor(images)).data.argmax(1) == labels).float().mean().item()
    assert sum(losses[-10:]) / 10 < 0.3 * losses[0], losses
    assert accuracy > 0.95, accuracy


# ---- a causal 1-d CNN language layer ---------------------------------------------------------------------------


class CausalConv1d(nn.Module):
    """A 1-d convolution over (N, C, T) whose output at t sees inputs t - dilation * (kernel_size - 1)
    up to t only: the sequence is padded on the left, never on the right. Same length out as in."""

    def __init__(self, in_channels, out_channels, kernel_size, dilation=1):
        super().__init__()
        self.left = dilation * (kernel_size - 1)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, dilation=dilation)

    def forward(self, x):
        return self.conv(F.pad(x, (self.left, 0)))


class CausalConvLM(nn.Module):
    """A tiny WaveNet/ByteNet-style language model: token ids (N, T) -> embedding -> residual
    blocks of gelu(causal dilated conv), dilations doubling, so position t sees the last
    kernel_size * 2^layers tokens -> logits (N, T, vocab)."""

    def __init__(self, vocab_size, width=16, kernel_size=2, layers=3):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.convs = nn.ModuleList(CausalConv1d(width, width, kernel_size, 2**i) for i in range(layers))
        self.head = nn.Linear(width, vocab_size)

    def forward(self, ids):
        x = self.embed(ids).transpose(1, 2)  # (N, width, T): channels first, as convolutions take them
        for conv in self.convs:
            x = x + F.gelu(conv(x))
        return self.head(x.transpose(1, 2))


class TorchCausalConvLM(tnn.Module):
    def __init__(self, vocab_size, width=16, kernel_size=2, layers=3):
        super().__init__()
        self.embed = tnn.Embedding(vocab_size, width)
        self.convs = tnn.ModuleList(tnn.Module() for _ in range(layers))
        for i, block in enumerate(self.convs):
            block.conv = tnn.Conv1d(width, width, kernel_size, dilation=2**i)
        self.head = tnn.Linear(width, vocab_size)

    def forward(self, ids):
        x = self.embed(ids).transpose(1, 2)
        for block in self.convs:
            conv = block.conv
            left = conv.dilation[0] * (conv.kernel_size[0] - 1)
            x = x + tnn.functional.gelu(conv(tnn.functional.pad(x, (left, 0))))
        return self.head(x.transpose(1, 2))


TEXT = "the cat sat on the mat. the dog sat on the log. " * 8


def text_batches(text, batch, length, generator):
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])

    def draw(step):
        starts = torch.randint(0, len(ids) - length - 1, (batch,), generator=generator)
        window = torch.stack([ids[s : s + length + 1] for s in starts.tolist()])
        return tg.Tensor(window[:, :-1]), tg.Tensor(window[:, 1:])

    return vocab, draw


def test_causal_cnn_language_layer_grads_equal_torchs():
    torch.manual_seed(0)
    vocab, draw = text_batches(TEXT, 4, 12, torch.Generator().manual_seed(0))
    ids, targets = draw(0)
    assert_same_grads(CausalConvLM(len(vocab)), TorchCausalConvLM(len(vocab)), ids.data, targets.data)


def test_causal_cnn_never_looks_ahead():
    torch.manual_seed(0)
    model = CausalConvLM(10).to(torch.float64)
    ids = torch.randint(0, 10, (2, 9))
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] + 1) % 10
    before, after = model(tg.Tensor(ids)).data, model(tg.Tensor(changed)).data
    torch.testing.assert_close(before[:, :6], after[:, :6], rtol=0, atol=0)
    assert not torch.allclose(before[:, 6:], after[:, 6:])


def test_causal_cnn_language_layer_learns_a_tiny_text():
    torch.manual_seed(0)
    vocab, draw = text_batches(TEXT, 16, 24, torch.Generator().manual_seed(0))
    losses = train(CausalConvLM(len(vocab), width=24), draw, steps=40, lr=0.02)
    assert losses[0] > 0.9 * math.log(len(vocab))  # starts near chance
    assert sum(losses[-5:]) / 5 < 0.3 * losses[0], losses
