"""Pipeline errors. A ``PermanentError`` is not worth retrying: the DAG fails the task at once."""


class PermanentError(Exception):
    """Retrying cannot help: the input or the lake must be fixed first."""


class DataValidationError(PermanentError):
    """The day's transactions broke the expectation suite; nothing was written."""


class LakeStateError(PermanentError):
    """The lake is not in the state this step needs (a missing day, an unvalidated input)."""
