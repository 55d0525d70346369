"""A character-level transformer language model on text that ships with Python: nothing is downloaded.

The text is the Python Language Reference's topics in the standard library (`pydoc_data.topics.topics`): the
topics in sorted key order, concatenated, first `TEXT_CHARS` characters (`text`). The text differs between
Python releases; `text_sha256` tells which one a run used, and a checkpoint fits only the vocabulary it was
trained with (`vocabulary`: the sorted set of the text's characters, nothing else).

The text is cut into `N_SEQUENCES` windows of `CONTEXT` + 1 characters, one after the other (window i starts at
character i * CONTEXT): the inputs are a window's first `CONTEXT` token ids, the targets the last `CONTEXT`
(the next character at every position). numpy's ``default_rng(SPLIT_SEED).permutation`` of the windows puts the
first `TRAIN_SEQUENCES` in the training split and the other `TEST_SEQUENCES` in the test split.

The landscape, after training (``python -m loss_landscape.examples.charlm --out charlm.pt``)::

    python plot_surface.py --model loss_landscape.examples.charlm:model --model_file charlm.pt \\
        --dataset loss_landscape.examples.charlm:dataset --loss_name token_crossentropy --metric perplexity \\
        --x=-1:1:11 --y=-1:1:11 --surf_file charlm.h5

Example:
    >>> (train_x, train_y), (test_x, test_y) = dataset()
    >>> tuple(train_x.shape), train_x.dtype, tuple(test_y.shape)
    ((4000, 32), torch.int64, (1000, 32))
    >>> model()(train_x[:2]).shape == (2, CONTEXT, len(vocabulary()))
    True
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from loss_landscape._util import atomic_write
from loss_landscape.examples import _cli

CONTEXT = 32
N_SEQUENCES = 5000
TEXT_CHARS = N_SEQUENCES * CONTEXT + 1
TRAIN_SEQUENCES = 4000
TEST_SEQUENCES = N_SEQUENCES - TRAIN_SEQUENCES
SPLIT_SEED = 0
DEFAULT_STEPS = 2500

Pair = tuple[torch.Tensor, torch.Tensor]


@functools.lru_cache(maxsize=1)
def text() -> str:
    """The first `TEXT_CHARS` characters of the Language Reference topics, in sorted key order."""
    from pydoc_data.topics import topics

    full = "".join(topics[key] for key in sorted(topics))
    if len(full) < TEXT_CHARS:  # every release since 3.0 has far more (3.11: 465k characters)
        raise RuntimeError(f"pydoc_data.topics has {len(full)} characters: expected at least {TEXT_CHARS}")
    return full[:TEXT_CHARS]


def text_sha256() -> str:
    """SHA-256 of `text` in UTF-8: which Python release's topics a run used."""
    return hashlib.sha256(text().encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def vocabulary() -> str:
    """The sorted set of the characters of `text`; token id i is character i."""
    return "".join(sorted(set(text())))


def encode(s: str) -> torch.Tensor:
    """Token ids (int64) of `s`, whose characters must all be in `vocabulary`.

    Example:
        >>> decode(encode("def f():"))
        'def f():'
    """
    index = {c: i for i, c in enumerate(vocabulary())}
    missing = sorted(set(s) - set(index))
    if missing:
        raise ValueError(f"characters {''.join(missing)!r} are not in the vocabulary: expected characters of text()")
    return torch.tensor([index[c] for c in s], dtype=torch.int64)


def decode(ids: torch.Tensor | Sequence[int]) -> str:
    vocab = vocabulary()
    return "".join(vocab[int(i)] for i in ids)


@functools.lru_cache(maxsize=1)
def _windows() -> torch.Tensor:
    ids = encode(text())
    starts = torch.arange(N_SEQUENCES) * CONTEXT
    return ids[starts.unsqueeze(1) + torch.arange(CONTEXT + 1)]  # (N_SEQUENCES, CONTEXT + 1)


def split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """Window indices of the training and test splits (see the module's docstring)."""
    perm = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(N_SEQUENCES).astype(np.int64))
    return perm[:TRAIN_SEQUENCES], perm[TRAIN_SEQUENCES:]


def windows() -> tuple[torch.Tensor, torch.Tensor]:
    """The training and test windows, (N, `CONTEXT` + 1) token ids each (a copy)."""
    w = _windows()
    train, test = split_indices()
    return w[train].clone(), w[test].clone()


def dataset() -> tuple[Pair, Pair]:
    """The factory for ``--dataset loss_landscape.examples.charlm:dataset``: ((train_x, train_y), (test_x,
    test_y)), inputs and next-character targets, int64 (N, `CONTEXT`) each.

    Example:
        >>> (x, y), _ = dataset()
        >>> bool((x[:, 1:] == y[:, :-1]).all())
        True
    """
    train, test = windows()
    return (train[:, :-1], train[:, 1:]), (test[:, :-1], test[:, 1:])


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention over earlier positions only, written out (no fused kernel), so it runs in any
    dtype and under torch.func."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not a multiple of n_head {n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_head)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a 4x GELU MLP."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A tiny causal transformer: token and learned position embeddings, `n_layer` blocks, a final LayerNorm and
    a linear head; token ids (B, T) in, logits (B, T, vocab_size) out. No dropout, so training is deterministic.

    Example:
        >>> net = CharTransformer(vocab_size=10, context=8, d_model=16, n_head=2, n_layer=1)
        >>> net(torch.zeros(3, 8, dtype=torch.int64)).shape
        torch.Size([3, 8, 10])
    """

    def __init__(self, vocab_size: int, context: int = CONTEXT, d_model: int = 64, n_head: int = 4,
                 n_layer: int = 2):
        super().__init__()
        self.context = context
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, n_head) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"inputs have {t} positions: expected at most the context of {self.context}")
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        return self.head(self.ln_f(self.blocks(x)))


def model(seed: int = 0) -> CharTransformer:
    """The factory for ``--model loss_landscape.examples.charlm:model``: the untrained network, its weights drawn
    from `seed` (the caller's random state is left as it was), so every call gives the same weights.

    Example:
        >>> sum(p.numel() for p in model().parameters()) > 100_000
        True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CharTransformer(len(vocabulary()))


def mean_token_loss(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 500) -> float:
    """Mean cross-entropy per token of `net` over (inputs, targets), in eval mode."""
    net.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            logits = net(inputs[start:start + batch_size])
            total += float(F.cross_entropy(logits.transpose(1, 2), targets[start:start + batch_size],
                                           reduction="sum"))
    return total / targets.numel()


def fit(net: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, steps: int, seed: int = 0,
        batch_size: int = 64, lr: float = 3e-3,
        loss_of: Optional[Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]] = None) -> None:
    """`steps` Adam steps on random batches (drawn from `seed`) with a cosine decay of the learning rate to 0;
    `loss_of(net, x, y)` gives a batch's mean loss (default: the token cross-entropy of ``net(x)``)."""
    if loss_of is None:
        def loss_of(n, x, y):
            return F.cross_entropy(n(x).transpose(1, 2), y)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch_size,), generator=g)
        opt.zero_grad(set_to_none=True)
        loss_of(net, inputs[idx], targets[idx]).backward()
        opt.step()
        sched.step()
    net.eval()


def train(out_path: Optional[str] = None, *, steps: int = DEFAULT_STEPS, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3) -> dict[str, float]:
    """Trains `model` (weights from `seed`) on the training split and saves its bare state dict at `out_path`
    (``torch.save(model.state_dict())``; None: not saved). About a minute on two CPU cores at the default steps.

    Returns:
        ``{"train_loss", "test_loss", "seconds"}``: mean cross-entropy per token after training (nats).

    Example:
        >>> train("charlm.pt", steps=20)["train_loss"] < math.log(len(vocabulary()))  # doctest: +SKIP
        True
    """
    (train_x, train_y), (test_x, test_y) = dataset()
    net = model(seed)
    start = time.perf_counter()
    fit(net, train_x, train_y, steps=steps, seed=seed, batch_size=batch_size, lr=lr)
    if out_path is not None:
        atomic_write(out_path, lambda tmp: torch.save(net.state_dict(), tmp))
    return {"train_loss": mean_token_loss(net, train_x, train_y), "test_loss": mean_token_loss(net, test_x, test_y),
            "seconds": time.perf_counter() - start}


def get_args_parser(add_help: bool = True, *, prog: str = "python -m loss_landscape.examples.charlm",
                    steps: int = DEFAULT_STEPS) -> argparse.ArgumentParser:
    return _cli.get_args_parser(prog=prog, description=__doc__.split("\n\n")[0], steps=steps, add_help=add_help)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = _cli.parse_args(get_args_parser(), argv)
    r = train(args.out, steps=args.steps, seed=args.seed)
    print(f"trained {args.steps} steps in {r['seconds']:.1f} s; text sha256 {text_sha256()[:12]}; "
          f"train loss {r['train_loss']:.4f}, test loss {r['test_loss']:.4f} (nats per character); saved {args.out}")


if __name__ == "__main__":
    main()
