"""Directions in weight space: what they are (`spec`), making and normalizing them (`vectors`, `make`,
`adam`), their files (`files`), their identity (`identity`), and moving a model along them (`perturb`).

A direction is a `ParamVector` shaped like the model's parameters (``dir_type="weights"``) or like its
full state dict (``dir_type="states"``, BN running statistics included). The arithmetic follows the
original tool (Li et al. 2018, tomgoldstein/loss-landscape) operation for operation, in float32, so
that the same directions give the same surfaces to the last digit.
"""

from loss_landscape.directions.spec import (NORMS, IGNORES, DIRECTION_FORMAT, DIRECTION_FORMAT_VERSION,
                                            DirectionSpec, ADAMEQ, Directions)
from loss_landscape.directions.vectors import (normalize_tensor_, normalize_direction_, direction_generator,
                                               create_random_direction, create_target_direction)
from loss_landscape.directions.files import (save_directions, load_directions, check_fits)
from loss_landscape.directions.perturb import (Perturber)
from loss_landscape.directions.identity import (UNRECORDED, direction_identity, identity_differences,
                                                describe_spec, describe_axes)
from loss_landscape.directions.make import (default_dir_file, make_directions, hessian_directions,
                                            setup_directions, open_directions)
from loss_landscape.directions.adam import (ADAM_MODES, AdamState, read_adam_state, read_adam_moments,
                                            adameq_multiplier, adameq_coords, adam_update_direction,
                                            adameq_point, adam_kind, adam_directions, adam_record)

__all__ = ["NORMS", "IGNORES", "DIRECTION_FORMAT", "DIRECTION_FORMAT_VERSION", "DirectionSpec", "ADAMEQ",
           "Directions", "normalize_tensor_", "normalize_direction_", "direction_generator",
           "create_random_direction", "create_target_direction", "save_directions", "load_directions",
           "check_fits", "Perturber", "UNRECORDED", "direction_identity", "identity_differences",
           "describe_spec", "describe_axes", "default_dir_file", "make_directions", "hessian_directions",
           "setup_directions", "open_directions", "ADAM_MODES", "AdamState", "read_adam_state",
           "read_adam_moments", "adameq_multiplier", "adameq_coords", "adam_update_direction", "adameq_point",
           "adam_kind", "adam_directions", "adam_record"]
