"""The design card's `net_plotter`: directions in weight space (create, normalize, save and load, move a
model along them). The code lives in `loss_landscape.directions`; this file re-exports its public names so
that scripts written for the flat layout (``from net_plotter import create_random_direction``) keep working.
"""

from loss_landscape.directions import (NORMS, IGNORES, DIRECTION_FORMAT, DIRECTION_FORMAT_VERSION,
                                       DirectionSpec, ADAMEQ, Directions, normalize_tensor_,
                                       normalize_direction_, direction_generator, create_random_direction,
                                       create_target_direction, save_directions, load_directions, check_fits,
                                       Perturber, UNRECORDED, direction_identity, identity_differences,
                                       describe_spec, describe_axes, default_dir_file, make_directions,
                                       hessian_directions, setup_directions, open_directions, ADAM_MODES,
                                       AdamState, read_adam_state, read_adam_moments, adameq_multiplier,
                                       adameq_coords, adam_update_direction, adameq_point, adam_kind,
                                       adam_directions, adam_record)

__all__ = ["NORMS", "IGNORES", "DIRECTION_FORMAT", "DIRECTION_FORMAT_VERSION", "DirectionSpec", "ADAMEQ",
           "Directions", "normalize_tensor_", "normalize_direction_", "direction_generator",
           "create_random_direction", "create_target_direction", "save_directions", "load_directions",
           "check_fits", "Perturber", "UNRECORDED", "direction_identity", "identity_differences",
           "describe_spec", "describe_axes", "default_dir_file", "make_directions", "hessian_directions",
           "setup_directions", "open_directions", "ADAM_MODES", "AdamState", "read_adam_state",
           "read_adam_moments", "adameq_multiplier", "adameq_coords", "adam_update_direction", "adameq_point",
           "adam_kind", "adam_directions", "adam_record"]
