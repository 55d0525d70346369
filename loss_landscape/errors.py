"""Every user error: one base class, `UserError`, that the commands catch and print as one line.

A user error is a wrong input (a flag, a file, a model, a dataset) that the user can fix; its message
is one line naming what was wrong and what is expected. Anything else is a bug or a fault and keeps its
traceback (``--debug``).
"""


class UserError(ValueError):
    """The base of every error the commands print as one line."""


# What a command prints as one line and exits 1 on: our errors, and the operating system's (a missing or
# read-only folder, a full disk), whose message names the path.
USER_ERRORS = (UserError, OSError)


class SurfaceError(UserError):
    """A surface file that cannot be used as asked; the message is one line."""


class DataError(UserError):
    """A dataset cannot be found, read or built; the message is one line meant for the user."""


class ModelError(UserError):
    """A model name, file or checkpoint that cannot be used; the message is one line."""


class EvaluationError(UserError):
    """A bad evaluation setting; the message is one line."""


class DirectionError(UserError):
    """A direction file or direction setting that cannot be used; the message is one line."""


class AdamDirectionError(UserError):
    """An optimizer state or Adam-direction setting that cannot be used; the message is one line."""


class CurvatureError(UserError):
    """A bad curvature setting or a solver that did not converge; the message is one line."""


class TrajectoryError(UserError):
    """A checkpoint folder, checkpoint or setting that cannot be used; the message is one line."""


class TrainError(UserError):
    """A bad training setting or resume file; the message is one line."""


class UnknownModelError(ModelError):
    """Raised by `create_model` for a name that no model registered.

    Attributes:
        name: The name asked for.
        known: The registered names, sorted.
    """

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown model {name!r}; known models: {', '.join(known)}")
