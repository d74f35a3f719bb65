"""The pipeline's configuration: ``conf/pipeline.yaml`` overridden by ``RFM__…`` variables.

``RFM__CLUSTERING__K=6`` overrides ``clustering.k``; lists and mappings take JSON
(``RFM__DAG__TAGS='["a","b"]'``). ``RFM_CONFIG`` names another YAML file to start from.
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from jobs import storage
from jobs.definitions import TABLES
from jobs.storage import Location

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "conf" / "pipeline.yaml"


class Paths(BaseModel):
    data_dir: str
    landing_dir: str
    lake_dir: str
    validation_dir: str
    mlflow_dir: str
    ivy_dir: str
    airflow_home: str
    expectations_dir: str
    reports_dir: str
    exports_dir: str

    def resolve(self, name: str) -> Path:
        """Absolute local path of setting ``name``, with ``{data_dir}`` expanded (``Settings.path``
        also takes ``s3://`` locations)."""
        raw = getattr(self, name).format(data_dir=self.data_dir)
        if raw.startswith("s3://"):
            raise ValueError(f"paths.{name} is {raw}: this use needs a local path")
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (REPO_ROOT / path).resolve()


class Storage(BaseModel):
    """How ``s3://`` locations are reached (``jobs/storage.py``); keys come from the environment."""

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = None  # an S3-compatible endpoint (http://127.0.0.1:8333); None: AWS
    region: str = "us-east-1"
    path_style: bool = True  # bucket in the path, not the host name (what S3-compatible stores serve)
    # a stopped or unreachable endpoint fails the step in tens of seconds, not minutes (Airflow retries it):
    max_attempts: int = Field(default=3, ge=1)  # tries of a failed request by each client (s3a, botocore, delta-rs)
    connect_timeout_seconds: int = Field(
        default=5, gt=0
    )  # a connection the endpoint does not accept in this time fails
    read_timeout_seconds: int = Field(default=30, gt=0)  # an open connection silent this long fails the request


class Landing(BaseModel):
    marker: str
    format: Literal["csv", "parquet"]
    sensor_poke_seconds: int
    sensor_timeout_seconds: int
    split_bytes: int = Field(gt=0)
    # the day folder's inventory and the bounds of what a landed file may hold (docs/pipeline.md, "Hostile input")
    ignore: list[str] = Field(default_factory=list)  # fnmatch patterns of names recorded, never read
    max_file_bytes: int = Field(default=1 << 30, gt=0)  # inflated bytes of one data file
    max_day_bytes: int = Field(default=2 << 30, gt=0)  # inflated bytes of a day's data files
    max_columns: int = Field(default=64, gt=0)  # header fields of one file
    max_field_chars: int = Field(default=4096, gt=0)  # characters of one field
    max_record_lines: int = Field(default=8, gt=0)  # physical lines one CSV record may span


class Policy(BaseModel):
    """What a broken expectation does: fail the day, quarantine its rows (up to ``max_share``), or warn."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["fail", "quarantine", "warn"]
    max_share: float | None = Field(default=None, ge=0, le=1)


class Validation(BaseModel):
    max_missing_customer_share: float = Field(gt=0, le=1)
    warn_missing_customer_share: float = Field(ge=0, le=1)
    adjustment_invoice_prefix: str
    adjustment_stock_codes: list[str]
    max_rows_per_day: int = Field(ge=1)
    quarantine_max_share: float = Field(ge=0, le=1)
    quarantine_max_day_share: float = Field(default=0.02, ge=0, le=1)  # every rule together
    policies: dict[str, Policy]

    def max_share(self, rule: str) -> float:
        """Largest share of a day's rows a quarantine rule may hold back before the day fails."""
        configured = self.policies[rule].max_share
        return self.quarantine_max_share if configured is None else configured


class Rfm(BaseModel):
    cancellation_prefix: str
    non_purchase_prefixes: list[str]
    non_product_stock_codes: list[str]
    drop_exact_duplicates: bool
    require_customer_id: bool
    net_of_cancellations: bool
    price_precision: int = Field(ge=0, le=6)
    incremental: bool = True


class Spark(BaseModel):
    master: str
    app_name: str
    delta_version: str
    scala_binary: str
    conf: dict[str, str | int | float | bool]
    remote: str | None = None  # sc://host:port of a Spark Connect server holding the driver; None: one per process
    connect_port: int = Field(default=15002, ge=1, le=65535)  # where `python -m jobs.adapters.spark serve` listens
    connect_max_retries: int = Field(default=6, ge=0)  # a Connect client's retries of a failed call
    connect_max_backoff_seconds: float = Field(default=10, gt=0)  # its longest wait between two


class Clustering(BaseModel):
    algorithm: Literal["kmeans", "gmm"]
    k: int | None = Field(default=None, ge=2)
    k_range: tuple[int, int]
    min_k: int = Field(ge=2)
    min_cluster_share: float = Field(ge=0, lt=1)
    seed: int
    max_iter: int = Field(ge=1)
    recency_unit_days: int = Field(ge=1)
    input_partitions: int = Field(ge=1)
    plot_sample: int = Field(ge=100)
    metrics_sample: int = Field(ge=1000)

    @model_validator(mode="after")
    def _valid_range(self) -> Clustering:
        low, high = self.k_range
        if not 2 <= low <= high:
            raise ValueError(f"k_range {self.k_range}: need 2 <= low <= high")
        return self

    def candidate_ks(self) -> list[int]:
        """The k values a retrain fits: the fixed k, or the sweep range."""
        return [self.k] if self.k is not None else list(range(self.k_range[0], self.k_range[1] + 1))


class Model(BaseModel):
    registered_name: str
    alias: str
    retrain_every_days: int = Field(ge=1)
    promotion_margin: float = Field(ge=0)
    label_match_max_distance: float = Field(gt=0)
    idle_relabel_max_share: float = Field(ge=0, le=1)
    clearly_better_silhouette: float = Field(ge=0)


class Mlflow(BaseModel):
    tracking_uri: str | None
    experiment: str
    artifacts_destination: str | None = None  # the server's --artifacts-destination (s3://bucket/mlflow); None: local
    ui_url: str | None = None  # the MLflow UI the Airflow links open (None: the tracking URI when it is http)


class SegmentRule(BaseModel):
    segment: str
    r: tuple[int, int]
    fm: tuple[int, int]


class LabelGuard(BaseModel):
    low: str
    high: list[str] = Field(min_length=1)


class LabelCheck(BaseModel):
    """A label's meaning, checked before a night publishes: the label's ``statistic`` of ``measure``
    over its customers ranks ``highest`` or ``lowest`` among the labels of the night, or lies
    strictly ``above`` or ``below`` another label's."""

    label: str
    measure: Literal["recency_days", "frequency", "monetary"]
    statistic: Literal["mean", "median"]
    rank: Literal["highest", "lowest"] | None = None
    above: str | None = None
    below: str | None = None

    @model_validator(mode="after")
    def _one_comparison(self) -> LabelCheck:
        if sum(x is not None for x in (self.rank, self.above, self.below)) != 1:
            raise ValueError(f"labels.checks: {self.label} {self.measure} needs exactly one of rank, above, below")
        return self

    @property
    def other(self) -> str | None:
        return self.above or self.below


class Labels(BaseModel):
    cluster_labels: list[str] = Field(min_length=2)
    profiles: dict[str, tuple[float, float, float]]
    guard: LabelGuard
    segment_rules: list[SegmentRule]
    checks: list[LabelCheck] = Field(default_factory=list)
    max_profile_distance: float = Field(default=float("inf"), gt=0)  # farther from every profile: unmatched_label
    unmatched_label: str = "Unprofiled"

    @model_validator(mode="after")
    def _profiles_cover_the_labels(self) -> Labels:
        if set(self.profiles) != set(self.cluster_labels) or len(set(self.cluster_labels)) != len(self.cluster_labels):
            raise ValueError(f"labels.profiles {sorted(self.profiles)} must name each cluster label once")
        unknown = {self.guard.low, *self.guard.high} - set(self.cluster_labels)
        if unknown:
            raise ValueError(f"labels.guard names unknown labels {sorted(unknown)}")
        named = {name for check in self.checks for name in (check.label, check.other) if name is not None}
        if named - set(self.cluster_labels):
            raise ValueError(f"labels.checks name unknown labels {sorted(named - set(self.cluster_labels))}")
        if self.unmatched_label in self.cluster_labels:
            raise ValueError(f"labels.unmatched_label {self.unmatched_label!r} must not be a cluster label")
        return self


class Clv(BaseModel):
    registered_name: str
    alias: str
    monthly_discount_rate: float = Field(ge=0)
    days_per_month: int = Field(ge=1)
    at_risk_max_p_purchase: float = Field(gt=0, le=1)
    at_risk_min_recency_days: int = Field(ge=0)
    at_risk_min_monetary_quantile: float = Field(ge=0, lt=1)
    calibration_min_history_days: int = Field(ge=1)
    calibration_min_customers: int = Field(ge=2)
    interval_draws: int = Field(ge=10)
    interval_seed: int
    scorecard_max_abs_bias: float = Field(gt=0)


class Eda(BaseModel):
    top_n: int = Field(ge=1)
    histogram_bins: int = Field(ge=2)


class Dag(BaseModel):
    dag_id: str
    owner: str
    start_date: str
    end_date: str | None = None  # last logical date the scheduler creates a run for (None: open-ended)
    catchup: bool
    retries: int = Field(ge=0)
    retry_delay_seconds: int
    max_retry_delay_seconds: int
    tags: list[str]
    task_timeout_minutes: dict[str, int]
    run_timeout_minutes: int = Field(ge=1)


class Maintenance(BaseModel):
    schedule: str
    reproducible_days: int | None = Field(default=None, ge=1)
    min_retention_hours: float = Field(ge=0)


class Generator(BaseModel):
    customers: int
    days: int
    end_date: str
    seed: int


class Dashboard(BaseModel):
    host: str
    port: int = Field(ge=0, le=65535)
    scatter_max_points: int = Field(ge=100)
    page_size: int = Field(ge=10)
    refresh_seconds: int = Field(ge=5)
    auth_user: str | None = None
    auth_password: str | None = None
    workers: int = Field(default=2, ge=1)
    filter_max_conditions: int = Field(default=2, ge=1, le=50)
    filter_max_chars: int = Field(default=200, ge=1, le=10_000)


class Exports(BaseModel):
    currency: str = Field(min_length=3, max_length=3)  # ISO code of the source's amounts; in money column names
    campaigns: dict[str, dict[str, list[str | bool]]]  # campaign list -> {gold column: values, any matches}


class Leases(BaseModel):
    heartbeat_seconds: float = Field(gt=0)
    missed_beats: int = Field(ge=2)
    wait_seconds: float = Field(ge=0)


class Alerts(BaseModel):
    webhook_url: str | None = None
    data_docs_url: str | None = None
    timeout_seconds: float = Field(gt=0)
    max_share_move_points: float = Field(default=5.0, gt=0)  # a segment's share moving more: a warning
    min_idle_stability: float = Field(default=0.99, ge=0, le=1)  # idle customers keeping their label, less: a warning


class Lineage(BaseModel):
    transport: str | None = None  # http(s) URL, a JSON-lines file (relative: to data_dir), or None: off
    namespace: str


class Settings(BaseSettings):
    """Typed view of the whole configuration."""

    model_config = SettingsConfigDict(env_prefix="RFM__", env_nested_delimiter="__", extra="forbid")

    paths: Paths
    storage: Storage = Storage()
    landing: Landing
    columns: dict[str, list[str]]
    timestamp_formats: list[str]
    validation: Validation
    rfm: Rfm
    spark: Spark
    clustering: Clustering
    model: Model
    mlflow: Mlflow
    labels: Labels
    clv: Clv
    eda: Eda
    dag: Dag
    maintenance: Maintenance
    generator: Generator
    dashboard: Dashboard
    exports: Exports
    leases: Leases
    alerts: Alerts
    lineage: Lineage

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("RFM_CONFIG", str(DEFAULT_CONFIG_FILE))
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file)

    def path(self, name: str) -> Location:
        """``paths.<name>``: an absolute local ``Path``, or a ``UPath`` on the bucket for ``s3://…``
        (``jobs.storage``: both answer ``/``, ``exists``, ``open``, ``iterdir``)."""
        raw = getattr(self.paths, name).format(data_dir=self.paths.data_dir)
        if storage.is_s3(raw):
            if name not in storage.BUCKET_CAPABLE:
                raise storage.StorageError(f"paths.{name} is {raw}: it must be a local folder")
            return storage.location(raw, self.storage)
        return self.paths.resolve(name)

    def local_path(self, name: str) -> Path:
        """``paths.<name>`` where it must be a local folder (ivy jars, Airflow home, logs)."""
        return self.paths.resolve(name)

    def table_path(self, name: str) -> Location:
        """Location of the Delta table ``name`` (a key of ``definitions.TABLES``)."""
        return self.path("lake_dir") / TABLES[name]

    def delta_options(self, location: str | os.PathLike[str]) -> dict[str, str] | None:
        """delta-rs / pyarrow storage options of a location (None: local)."""
        return storage.delta_options(location, self.storage)

    def report_dir(self, run_date: date) -> Location:
        """Where the EDA report of ``run_date`` lands."""
        return self.path("reports_dir") / f"date={run_date.isoformat()}"

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI: the configured one, else a SQLite store under the data dir."""
        return self.mlflow.tracking_uri or f"sqlite:///{self.path('mlflow_dir') / 'mlflow.db'}"


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings()


def load_settings(fresh: bool = False) -> Settings:
    """The configuration; ``fresh=True`` re-reads file and environment."""
    if fresh:
        _cached.cache_clear()
    return _cached()
