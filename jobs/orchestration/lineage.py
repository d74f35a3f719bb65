"""OpenLineage for the DAG tasks: the Delta tables each step read and wrote, with their versions.

With ``apache-airflow-providers-openlineage`` the Airflow listener emits a START and a COMPLETE
event per task. A ``@task`` has no extractor of its own (the provider's PythonExtractor only
serves ``PythonOperator``), so its events would carry only the static ``outlets``. The provider's
way to do better is a custom extractor (``[openlineage] extractors``): ``StepLineageExtractor``
serves the decorated Python operator and, on completion, returns the datasets that
``run_in_task`` recorded from the step's result in the same process: inputs per
``definitions.TABLES_READ`` (plus the day's landing folder for validate and ingest), outputs per
``TABLES_WRITTEN`` and ``TABLES_ALSO_WRITTEN``, each with a ``version`` dataset facet (the Delta version read or written)
where the step reports one. Datasets follow the OpenLineage naming of local files: namespace
``file``, name the absolute path — the names the provider gives the tables' Asset URIs.

The transport comes from ``lineage.transport`` (``RFM__LINEAGE__TRANSPORT``): an http(s) URL
(e.g. Marquez), a file of JSON lines, or null (lineage off); ``airflow_env`` turns it into the
provider's ``AIRFLOW__OPENLINEAGE__*`` settings for every Airflow process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from jobs import storage
from jobs.config import Settings
from jobs.definitions import READS_LANDING, TABLES_ALSO_WRITTEN, TABLES_READ, TABLES_WRITTEN

FILE_NAMESPACE = "file"
EXTRACTOR = "jobs.orchestration.lineage.StepLineageExtractor"


@dataclass(frozen=True)
class TableRef:
    """One dataset of a task's lineage: its path and the version read or written (None: unknown)."""

    path: str
    version: int | None = None


@dataclass
class StepLineage:
    inputs: list[TableRef] = field(default_factory=list)
    outputs: list[TableRef] = field(default_factory=list)


_recorded: dict[str, StepLineage] = {}  # task id -> lineage of the step it ran in this process


def _version(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def step_lineage(settings: Settings, step: str, run_date: date, result: dict[str, Any]) -> StepLineage:
    """Inputs and outputs of ``step`` from its result (versions keyed by table name; ``read_versions``
    for a table the step also writes: the plain key then holds the written version). A step that
    reports ``read_versions`` lists only the declared inputs it read (clv: the state, or bronze)."""
    from jobs.adapters.landing import day_dir

    written = TABLES_WRITTEN.get(step, []) + TABLES_ALSO_WRITTEN.get(step, [])
    read_versions = result.get("read_versions") or {}
    inputs = [TableRef(str(day_dir(settings.path("landing_dir"), run_date)))] if step in READS_LANDING else []
    for name in TABLES_READ.get(step, []):
        if read_versions and name not in read_versions and name not in result:
            continue  # a step that reports what it read did not read this table tonight
        version = read_versions.get(name, None if name in written else result.get(name))
        inputs.append(TableRef(str(settings.table_path(name)), _version(version)))
    outputs = [TableRef(str(settings.table_path(name)), _version(result.get(name))) for name in written]
    return StepLineage(inputs, outputs)


def current_task_id() -> str | None:
    """The id of the Airflow task running in this process, or None outside a task."""
    try:
        from airflow.sdk import get_current_context

        return get_current_context()["ti"].task_id
    except Exception:  # noqa: BLE001 - no Airflow task context (CLI, tests): nothing to record
        return None


def record(settings: Settings, step: str, run_date: date, result: dict[str, Any]) -> None:
    """Keep the lineage of the step the current task ran, for the extractor (same process)."""
    task_id = current_task_id()
    if task_id is not None:
        _recorded[task_id] = step_lineage(settings, step, run_date, result)


def recorded(task_id: str) -> StepLineage | None:
    """The lineage recorded by task ``task_id`` in this process, or None."""
    return _recorded.get(task_id)


def transport_config(transport: str | None, data_dir: Path) -> dict[str, Any] | None:
    """The provider's transport for ``lineage.transport``: http(s) URL, file path (relative: to
    ``data_dir``, a local folder), or None (off)."""
    if not transport:
        return None
    if transport.startswith(("http://", "https://")):
        return {"type": "http", "url": transport}
    path = Path(transport.removeprefix("file://"))
    return {"type": "file", "log_file_path": str(path if path.is_absolute() else data_dir / path), "append": True}


def airflow_env(settings: Settings, transport: str | None = None) -> dict[str, str]:
    """``AIRFLOW__OPENLINEAGE__*`` for every Airflow process (``transport`` overrides the config)."""
    data_dir = settings.path("data_dir")  # a file transport writes a local file: beside the logs when it is a bucket
    local = settings.local_path("airflow_home") if storage.is_remote(data_dir) else data_dir
    config = transport_config(transport or settings.lineage.transport, local)
    if config is None:
        return {"AIRFLOW__OPENLINEAGE__DISABLED": "True"}
    return {
        "AIRFLOW__OPENLINEAGE__DISABLED": "False",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(config),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": settings.lineage.namespace,
        "AIRFLOW__OPENLINEAGE__EXTRACTORS": EXTRACTOR,
    }


def _datasets(refs: list[TableRef], kind: type) -> list:
    from openlineage.client.facet_v2 import dataset_version_dataset

    return [
        kind(
            namespace=FILE_NAMESPACE,
            name=ref.path,
            facets={"version": dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(ref.version))}
            if ref.version is not None
            else {},
        )
        for ref in refs
    ]


def operator_lineage(lineage: StepLineage):
    """The provider's ``OperatorLineage`` of a step's recorded lineage."""
    from airflow.providers.openlineage.extractors.base import OperatorLineage
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    return OperatorLineage(
        inputs=_datasets(lineage.inputs, InputDataset), outputs=_datasets(lineage.outputs, OutputDataset)
    )


def _extractor_base():
    try:
        from airflow.providers.openlineage.extractors.base import BaseExtractor
    except ImportError:  # the provider is not installed: nothing uses the extractor
        return object
    return BaseExtractor


class StepLineageExtractor(_extractor_base()):
    """Custom OpenLineage extractor for ``@task`` tasks: the recorded step lineage on completion.

    At start (and for tasks that ran no step) it returns nothing, and the provider falls back to
    the task's declared ``outlets``."""

    @classmethod
    def get_operator_classnames(cls) -> list[str]:
        return ["_PythonDecoratedOperator"]

    def _execute_extraction(self):
        return None

    def extract_on_complete(self, task_instance):
        lineage = recorded(self.operator.task_id)
        return operator_lineage(lineage) if lineage is not None else None

    def extract_on_failure(self, task_instance):
        return None
