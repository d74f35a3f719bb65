"""The pipeline's steps, one module per DAG task (task id = module name): extract -> transform ->
load for one run date.

Steps never import each other; what two of them share lives in ``jobs.core`` (pure) or
``jobs.adapters`` (I/O). Each DAG task imports its step function and calls it; the command
line's table of the same functions is ``jobs.cli.steps`` (``python -m jobs <step> --run-date D``).
"""
