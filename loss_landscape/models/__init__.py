"""Models: by name (the CIFAR-10 zoo in `cifar10`, the embedded digits models in `digits`) or
``pkg.module:factory``, and checkpoints (`loading`).
"""

from loss_landscape.models.loading import (known_models, native_dataset, check_name, build_model, file_sha256,
                                           read_state_dict, load_weights, load_model, describe,
                                           state_sha256)

__all__ = ["known_models", "native_dataset", "check_name", "build_model", "file_sha256", "read_state_dict",
           "load_weights", "load_model", "describe", "state_sha256"]
