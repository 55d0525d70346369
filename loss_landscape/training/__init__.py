"""Training of a classifier on tensors, as the original's ``cifar10/main.py`` trains, but reproducible; and of any
model on any data with any loss of `loss_landscape.losses` (a language model on token ids, a regression, a model
that computes its own loss), each step minimizing the batch's weighted mean loss.

The data come once from `data.load_dataset` as CPU tensors; shuffling and augmentation (random crop with
padding, horizontal flip) are done on tensors per batch with a `torch.Generator` derived from
(seed, epoch), so an epoch's randomness depends on nothing but the seed and the epoch number and a run
resumed from a checkpoint continues exactly as the uninterrupted run would (no RNG state is saved).

Checkpoints keep the original's layout: ``model_{epoch}.t7`` = {'state_dict', 'epoch', 'acc'} (test
accuracy in percent) and ``opt_state_{epoch}.t7`` = {'optimizer': optimizer.state_dict()}.

Example:
    >>> from loss_landscape.data import load_dataset  # doctest: +SKIP
    >>> ev = load_dataset("digits")  # doctest: +SKIP
    >>> net = init_model("digits_cnn", seed=0)  # doctest: +SKIP
    >>> result = train(net, ev, save_folder="trained_nets/run", epochs=3, lr=0.05)  # doctest: +SKIP
"""

from loss_landscape.errors import TrainError
from loss_landscape.training.loop import (TrainResult, resume_state, train)
from loss_landscape.training.setup import (Augmentation, DECAY_FRACTIONS, OPTIMIZERS, augment_batch,
                                           check_augmentation, corrupt_labels, default_augmentation,
                                           epoch_generator, init_model, lr_at, lr_milestones, make_optimizer,
                                           save_folder_name)

__all__ = ["Augmentation", "DECAY_FRACTIONS", "OPTIMIZERS", "TrainResult", "augment_batch", "check_augmentation",
           "corrupt_labels", "default_augmentation", "epoch_generator", "init_model", "lr_at", "lr_milestones",
           "make_optimizer", "resume_state", "save_folder_name", "train", "TrainError"]
