"""A Hugging Face ``transformers`` GPT-2 built on the spot from a tiny `GPT2Config`: random seeded weights, no
hub download (no tokenizer either: the characters of `loss_landscape.examples.charlm` are the tokens).

The model computes its own loss: the dataset's inputs are a dict ``{"input_ids", "attention_mask", "labels"}``
of int64 (N, `charlm.CONTEXT` + 1) tensors and there are no targets, so the landscape is taken with
``--loss_name model_loss`` (``model(**batch).loss``, GPT-2 shifting the labels itself). Every sequence has the
same length and no label is ignored, so the mean of the batch losses weighted by their sample counts is the
loss of the whole set at once; the tokens predicted are exactly charlm's targets, so the two models' losses
compare.

The input and output embeddings are tied (``lm_head.weight`` is ``transformer.wte.weight``, as in GPT-2):
``model.parameters()`` holds the matrix once, so a weight direction (``--dir_type weights``, the default) moves
it once; the state dict lists it under both names.

After saving the initial weights (``python -m loss_landscape.examples.gpt2_tiny --out gpt2.pt``, or
``--steps N`` to train first)::

    python plot_surface.py --model loss_landscape.examples.gpt2_tiny:model --model_file gpt2.pt \\
        --dataset loss_landscape.examples.gpt2_tiny:dataset --loss_name model_loss --metric perplexity \\
        --x=-1:1:11 --y=-1:1:11 --surf_file gpt2.h5

Example:
    >>> (train, _), (test, _) = dataset()
    >>> sorted(train), tuple(train["input_ids"].shape)
    (['attention_mask', 'input_ids', 'labels'], (4000, 33))
    >>> float(model()(**{k: v[:2] for k, v in train.items()}).loss.detach()) > 0
    True
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import torch
from torch import nn

from loss_landscape._util import atomic_write
from loss_landscape.examples import _cli, charlm

N_LAYER = 2
N_HEAD = 2
N_EMBD = 48
N_POSITIONS = 64


def config() -> Any:
    """The tiny `GPT2Config`: charlm's vocabulary, no dropout (training is deterministic), the plain ("eager")
    attention, which runs in float64 and under torch.func."""
    from transformers import GPT2Config

    cfg = GPT2Config(vocab_size=len(charlm.vocabulary()), n_positions=N_POSITIONS, n_embd=N_EMBD, n_layer=N_LAYER,
                     n_head=N_HEAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                     eos_token_id=None, use_cache=False)
    cfg._attn_implementation = "eager"
    return cfg


def model(seed: int = 0) -> nn.Module:
    """The factory for ``--model loss_landscape.examples.gpt2_tiny:model``: a `GPT2LMHeadModel` with weights
    drawn from `seed` (the caller's random state is left as it was), the same at every call, in eval mode.

    Example:
        >>> m = model()
        >>> m.lm_head.weight is m.transformer.wte.weight
        True
    """
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = GPT2LMHeadModel(config())
    net.loss_type = "ForCausalLM"  # what GPT2LMHeadModel computes; transformers cannot tell it from the class name
    return net.eval()


def _batch(windows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"input_ids": windows, "attention_mask": torch.ones_like(windows), "labels": windows.clone()}


def dataset() -> tuple[tuple[dict[str, torch.Tensor], None], tuple[dict[str, torch.Tensor], None]]:
    """The factory for ``--dataset loss_landscape.examples.gpt2_tiny:dataset``: ((train, None), (test, None)),
    each a dict of int64 (N, `charlm.CONTEXT` + 1) tensors: charlm's windows, all-ones attention masks, and labels
    equal to the input ids."""
    train, test = charlm.windows()
    return (_batch(train), None), (_batch(test), None)


def train(out_path: Optional[str] = None, *, steps: int = 0, seed: int = 0, batch_size: int = 64,
          lr: float = 3e-3) -> dict[str, float]:
    """`steps` Adam steps of `model` on the training split (0: the initial weights), then its state dict is saved
    at `out_path` (``torch.save(model.state_dict())``; None: not saved).

    Returns:
        ``{"train_loss", "test_loss", "seconds"}``: the model's own loss over each split (nats per token).

    Example:
        >>> train("gpt2.pt")["train_loss"] > 4  # doctest: +SKIP
        True
    """
    (train_d, _), (test_d, _) = dataset()
    net = model(seed)
    start = time.perf_counter()
    if steps:
        charlm.fit(net, train_d["input_ids"], train_d["labels"], steps=steps, seed=seed, batch_size=batch_size,
                   lr=lr, loss_of=lambda n, x, y: n(input_ids=x, labels=y).loss)
    if out_path is not None:
        atomic_write(out_path, lambda tmp: torch.save(net.state_dict(), tmp))
    return {"train_loss": mean_loss(net, train_d), "test_loss": mean_loss(net, test_d),
            "seconds": time.perf_counter() - start}


def save(out_path: str, *, seed: int = 0) -> dict[str, float]:
    """Saves the initial weights of ``model(seed)`` at `out_path` (``torch.save(model.state_dict())``); returns
    their losses as `train` does.

    Example:
        >>> save("gpt2.pt")["test_loss"] > 4  # doctest: +SKIP
        True
    """
    return train(out_path, steps=0, seed=seed)


def mean_loss(net: nn.Module, data: dict[str, torch.Tensor], batch_size: int = 500) -> float:
    """The model's own loss over `data`, batch losses weighted by their sample counts, in eval mode."""
    net.eval()
    n, total = len(data["input_ids"]), 0.0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            part = {k: v[start:start + batch_size] for k, v in data.items()}
            total += float(net(**part).loss) * len(part["input_ids"])
    return total / n


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = _cli.get_args_parser(prog="python -m loss_landscape.examples.gpt2_tiny",
                                  description=__doc__.split("\n\n")[0], steps=0,
                                  steps_help="Adam steps before saving (default: 0, the initial weights)")
    args = _cli.parse_args(parser, argv)
    r = train(args.out, steps=args.steps, seed=args.seed)
    print(f"{args.steps} training steps in {r['seconds']:.1f} s; train loss {r['train_loss']:.4f}, test loss "
          f"{r['test_loss']:.4f} (nats per character); saved {args.out}")


if __name__ == "__main__":
    main()
