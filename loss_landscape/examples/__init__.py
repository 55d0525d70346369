"""Examples of any model, loss and data, each a module with a ``model()`` factory for ``--model`` and a
``dataset()`` factory for ``--dataset``; they run on a CPU in seconds to a minute and download nothing.

- `loss_landscape.examples.charlm`: a character-level causal transformer (written here) on the Python Language
  Reference topics that ship with Python; ``--loss_name token_crossentropy --metric perplexity``.
- `loss_landscape.examples.gpt2_tiny`: a Hugging Face ``transformers`` GPT-2 built from a tiny config, dict
  inputs (``input_ids``, ``attention_mask``, ``labels``) and its own loss; ``--loss_name model_loss``.
- `loss_landscape.examples.regression`: an MLP on a synthetic 2-D function with a user loss and metric;
  ``--loss_name loss_landscape.examples.regression:log_cosh --metric mae=loss_landscape.examples.regression:abs_error``.

Each trains and saves a checkpoint with ``python -m loss_landscape.examples.<name> --out FILE``; see
``doc/models.md`` for the commands that draw their landscapes.

Example:
    >>> from loss_landscape.examples import regression
    >>> (x, y), _ = regression.dataset()
    >>> regression.model()(x[:3]).shape
    torch.Size([3, 1])
"""
