"""Pipeline errors. A ``PermanentError`` is not worth retrying: the DAG fails the task at once."""


class PermanentError(Exception):
    """Retrying cannot help: the input or the lake must be fixed first."""


class DataValidationError(PermanentError):
    """The day's transactions broke the expectation suite; nothing was written."""


class LakeStateError(PermanentError):
    """The lake is not in the state this step needs (a missing day, an unvalidated input)."""


class LabelGateError(PermanentError):
    """Tonight's cluster labels failed their meaning checks (``labels.checks``): nothing was written
    or published; readers keep the last good snapshot. ``checks``: each failed check with its numbers
    (label names and aggregates only, so the failure alert may carry them)."""

    def __init__(self, run_date: object, checks: list[str]) -> None:
        self.checks = list(checks)
        super().__init__(
            f"{run_date}: the cluster labels failed {len(checks)} meaning check(s), nothing published: "
            + "; ".join(checks)
        )


class UnreadableFileError(DataValidationError):
    """A landed file cannot be read as what its name says (truncated or corrupt gzip, not UTF-8, no Parquet footer)."""


class LandingChangedError(LakeStateError):
    """The landed files changed while a step was reading them: what was validated is not what is there."""


class StorageUnavailableError(RuntimeError):
    """The object store did not answer (refused, timed out, unresolvable): retrying can help, once it is back.
    Not a ``PermanentError``: the task fails and Airflow retries it; ``python -m jobs`` exits 75."""
