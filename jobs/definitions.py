"""One home per definition: table names, columns, features, label schemes, MLflow tag names.

Pure Python (no Spark, no MLflow), so the dashboard, the steps and the tests import the same
names. Behaviour that depends on configuration lives in ``conf/``; what is here is the
pipeline's vocabulary.
"""

from __future__ import annotations

from datetime import date, timedelta

# ---------------------------------------------------------------- steps (one module of jobs/steps each)
# The nightly DAG's steps in their order; each is its task's id (``jobs.cli.night_steps`` maps them to functions).
NIGHT_STEPS = ("validate", "ingest", "cluster", "label", "clv", "eda")

# ---------------------------------------------------------------- customer measures and features
RECENCY, FREQUENCY, MONETARY = "recency_days", "frequency", "monetary"
# The three RFM measures, in this order everywhere: quintile scores, clustering features, profiles.
RFM_MEASURES = [RECENCY, FREQUENCY, MONETARY]
# A customer's RFM measures and their 1-5 quintile scores, as gold, the exports and the dashboard list them.
RFM_COLUMNS = [*RFM_MEASURES, "r_score", "f_score", "m_score", "rfm_score"]

# ---------------------------------------------------------------- Delta tables (under paths.lake_dir)
TABLES = {
    "bronze_transactions": "bronze/transactions",
    "silver_customer_state": "silver/customer_state",
    "silver_customer_rfm": "silver/customer_rfm",
    "silver_daily_sales": "silver/daily_sales",
    "silver_daily_orders_by_hour": "silver/daily_orders_by_hour",
    "silver_daily_country": "silver/daily_country",
    "silver_daily_product": "silver/daily_product",
    "silver_customer_clusters": "silver/customer_clusters",
    "gold_customer_segments": "gold/customer_segments",
    "gold_segment_summary": "gold/segment_summary",
    "gold_segment_transitions": "gold/segment_transitions",
    "gold_forecast_scorecard": "gold/forecast_scorecard",  # the forecast of D - 90 against (D - 90, D], per night
    "gold_published": "gold/published",  # written last by a night: what readers may see (jobs.adapters.publish)
    "run_audit": "audit/run_audit",
    "quarantine_transactions": "quarantine/transactions",
}
# DAG step -> the tables it writes (the DAG declares them as Airflow Asset outlets).
TABLES_WRITTEN = {
    "ingest": [
        "quarantine_transactions",
        "bronze_transactions",
        "silver_customer_state",
        "silver_customer_rfm",
        "silver_daily_sales",
        "silver_daily_orders_by_hour",
        "silver_daily_country",
        "silver_daily_product",
        "run_audit",
    ],
    "cluster": ["silver_customer_clusters"],
    # label publishes a provisional record too, but the snapshot is complete (and its gold_published
    # Asset event emitted) only when clv has added its columns and published again.
    "label": ["gold_customer_segments", "gold_segment_summary", "gold_segment_transitions"],
    "clv": ["gold_customer_segments", "gold_segment_summary", "gold_forecast_scorecard", "gold_published"],
}
# DAG step -> the Delta tables it reads (OpenLineage inputs, jobs/orchestration/lineage.py); validate and
# ingest also read the day's landing folder. A version is reported where the step's result holds one.
TABLES_READ = {
    "ingest": ["silver_customer_state"],
    "cluster": ["silver_customer_rfm"],
    "label": ["silver_customer_rfm", "silver_customer_clusters", "gold_customer_segments"],
    "clv": ["silver_customer_state", "bronze_transactions", "gold_customer_segments"],  # state, or bronze on a re-run
    "eda": [
        "gold_customer_segments",
        "gold_segment_summary",
        "silver_daily_sales",
        "silver_daily_orders_by_hour",
        "silver_daily_country",
        "silver_daily_product",
    ],
}
READS_LANDING = ("validate", "ingest")
# Tables a step writes without declaring them as Asset outlets (no Asset event): OpenLineage outputs only.
# label's publish record is provisional (clv publishes the complete snapshot); label and clv append audit rows.
TABLES_ALSO_WRITTEN = {"label": ["gold_published", "run_audit"], "clv": ["run_audit"]}
# The publish record: its Asset event (emitted by clv, the last writer of a night) triggers segment_export.
EXPORT_TRIGGER_TABLE = "gold_published"
# The gold segment columns a re-run must reproduce exactly (the checks of idempotence and convergence).
GOLD_BUSINESS_COLUMNS = [
    "snapshot_date",
    "customer_id",
    *RFM_COLUMNS,
    "rfm_segment",
    "cluster",
    "cluster_label",
    "country",
]
# The table the per-segment lists are read from, at the version the publish record holds.
EXPORT_SOURCE_TABLE = "gold_customer_segments"
# Columns of the per-segment customer lists marketing tools import (segment_export).
EXPORT_COLUMNS = [
    "customer_id",
    "country",
    *RFM_COLUMNS,
    "cluster_label",
    "rfm_segment",
    "snapshot_date",
]
EXPORT_MANIFEST = "manifest.json"
# XCom keys the DAG tasks push for the Airflow UI's extra links (plugins/rfm_links.py).
MLFLOW_RUN_URL_KEY, DATA_DOCS_URL_KEY = "mlflow_run_url", "data_docs_url"
DATA_DOCS_URL_PREFIX = "/data-docs"  # where the plugin serves the GX Data Docs inside the Airflow API server

# ---------------------------------------------------------------- transactions
# The canonical column names every source naming is mapped to (``columns`` in conf/).
CANONICAL_COLUMNS = [
    "invoice",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "price",
    "customer_id",
    "country",
]
# Columns a source must provide: every column ingest selects into bronze (``typed_rows``). The suite's
# ``expect_column_to_exist`` rules are generated from this list (``expectations.load_suite``) and the
# strict reader checks each file's header against it before Spark reads the file.
REQUIRED_COLUMNS = list(CANONICAL_COLUMNS)
# Where a landed row comes from: its file (name within the day folder) and its row number in that
# file (1 = the first row after the header); with the run date, the key of a quarantined row.
SOURCE_FILE, SOURCE_ROW = "source_file", "source_row"
ROW_KEY = [SOURCE_FILE, SOURCE_ROW]
# The row's fields exactly as read (source column name -> text), as one JSON object.
RAW_RECORD = "raw_record"
# Validation policies: what a broken expectation does to the day (see ``validation.policies``).
FAIL, QUARANTINE, WARN = "fail", "quarantine", "warn"
# The audit's count of rows held back in quarantine (beside the RFM exclusion reasons).
QUARANTINED = "quarantined"
# Row accounting, kept in the ingest audit record's ``excluded_rows`` map beside the exclusion reasons:
# records the strict reader counted = bronze rows + quarantined + exact duplicates dropped.
LANDED_RECORDS, BRONZE_ROWS, DUPLICATES_DROPPED = (
    "accounting:landed_records",
    "accounting:bronze_rows",
    "accounting:duplicates_dropped",
)


# ---------------------------------------------------------------- label schemes
CLUSTER_SCHEME, RFM_SCHEME = "cluster", "rfm"
# Label scheme -> the gold column that holds a customer's label under it.
LABEL_SCHEMES = {CLUSTER_SCHEME: "cluster_label", RFM_SCHEME: "rfm_segment"}
# Segment transitions: where a customer absent from the previous snapshot comes from, and
# where one absent tonight goes.
NEW_CUSTOMER, GONE_CUSTOMER = "new", "gone"
UNCLASSIFIED = "Unclassified"  # RFM segment of a score no segment rule covers

# ---------------------------------------------------------------- predicted customer value (jobs/steps/clv.py)
CLV_HORIZON_DAYS = 90  # horizon of expected_purchases_90d and p_purchase_90d
CLV_MONTHS = 12  # horizon of clv_12m
# Gold columns the clv step adds to gold/customer_segments (score -> column).
CLV_COLUMNS = {
    "p_alive": "p_alive",
    "p_purchase": "p_purchase_90d",  # the model's own probability (raw)
    "p_purchase_calibrated": "p_purchase_90d_calibrated",  # through the version's isotonic map (jobs.core.calibration)
    "expected_purchases": "expected_purchases_90d",
    "expected_spend": "expected_spend_90d",  # expected purchases x Gamma-Gamma spend per purchase, undiscounted
    "clv": "clv_12m",
    "clv_p10": "clv_12m_p10",  # the 80 % predictive interval of clv_12m (jobs.core.clv.value_quantiles)
    "clv_p90": "clv_12m_p90",
}
CLV_INTERVAL = {"clv_p10": 0.1, "clv_p90": 0.9}  # interval score -> its quantile
# gold flag: high past spend, calibrated P(purchase) low, no recent purchase (conf clv.at_risk_*)
AT_RISK_VALUE = "at_risk_value"
# Predicted-value columns added to the segment exports when the snapshot has them.
EXPORT_CLV_COLUMNS = [*CLV_COLUMNS.values(), AT_RISK_VALUE]

# ---------------------------------------------------------------- MLflow tags
RUN_DATE_TAG = "rfm.run_date"
NOTE_TAG = "mlflow.note.content"  # the Description box of a run, model or version in the MLflow UI
# The experiment's kind: classic ML, so the UI opens on its runs, not on GenAI traces (MLflow 3).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
STEP_TAG = "rfm.step"
SUPERSEDED_TAG = "rfm.superseded_by"
TRAINED_VERSION_TAG = "rfm.trained_model_version"
NIGHT_TYPE_TAG = "rfm.night_type"
PLAN_TAG = "rfm.plan"
MODEL_VERSION_TAG = "rfm.model_version"
PROMOTED_TAG = "rfm.promoted"
CHOSEN_TAG = "rfm.chosen"
CHOSEN_K_TAG = "rfm.chosen_k"
K_RULE_TAG = "rfm.k_rule"
DAG_TAG = "airflow.dag_id"
DAG_RUN_TAG = "airflow.run_id"
TASK_TAG = "airflow.task_id"
PARAM_TAG_PREFIX = "airflow.param."  # + a DAG param's name: the manual run's choices, on the night's MLflow run
# MLflow run params that name the table version a night read (lake maintenance keeps those versions).
INPUT_VERSION_PARAM = "input_version"
CLV_MODEL_VERSION_PARAM = "clv_model_version"  # the rfm-clv version a night scored with (every night)
CLV_PARAM_PREFIX = "clv_"  # + a BG/NBD / Gamma-Gamma parameter: the values that version holds
CLV_TOTAL_METRIC = "clv_12m_total"  # the night's predicted 12-month value of all its customers
CLV_CALIBRATION_PARAM = "calibration_method"  # of an rfm-clv fit run (not CLV_PARAM_PREFIX: those are the numbers)
CLV_CALIBRATION_TAG = "rfm.clv_calibration"  # the night's calibration map: method and why (identity: never silent)
SCORECARD_TAG = "rfm.forecast_scorecard"  # the night's scorecard: scored, or why not (no snapshot 90 nights earlier)
SCORECARD_BIAS_TAG = "rfm.forecast_bias_exceeded"  # "true"/"false": |overall bias| above clv.scorecard_max_abs_bias
LABEL_GATE_TAG = "rfm.label_gate"  # passed / failed: the meaning checks of the night's labels (label step)
WARNINGS_TAG = "rfm.warnings"  # + ".<step>": how many warnings the step posted about the night it published
TABLE_VERSION_PARAMS = {"silver_customer_rfm": INPUT_VERSION_PARAM}
# The forecast-vs-actual scorecard (gold/forecast_scorecard, jobs.core.scorecard): one row per label scheme and
# segment of the forecast's snapshot, and an overall row (label_scheme and segment both SCORECARD_ALL).
SCORECARD_ALL = "all"
SCORECARD_COLUMNS = [
    "snapshot_date",  # the night scored (D)
    "forecast_date",  # the snapshot whose forecast is scored (D - 90)
    "label_scheme",
    "segment",
    "customers",
    "mean_predicted_purchases",
    "mean_actual_purchases",
    "bias",  # mean predicted - mean actual purchase days
    "mae",  # mean |predicted - actual| purchase days
    "mean_predicted_p",  # calibrated P(purchase) when the snapshot has it
    "share_bought",
    "predicted_spend",  # total expected_spend_90d (null: a snapshot from before that column)
    "actual_spend",  # total net spend in (D - 90, D]
]
# Tags of a registered model version.
TRAINED_ON_TAG = "rfm.trained_on"
K_TAG = "rfm.k"
PROMOTION_TAG = "rfm.promotion"


def days_between(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last``, both included (empty when ``last`` < ``first``)."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]


# ---------------------------------------------------------------- fault injection (jobs.adapters.faults)
# A process whose environment names a fault point in FAULT_POINT_ENV SIGKILLs itself on reaching it;
# FAULT_TRACE_ENV names a file each point reached is appended to (the harness finds the points that way).
FAULT_POINT_ENV = "RFM_FAULT_POINT"
FAULT_TRACE_ENV = "RFM_FAULT_TRACE"
# With FAULT_PAUSE_ENV naming a file, the armed point pauses instead: it writes the file and goes on
# once the harness has removed it (the harness stops the S3 server meanwhile: a storage outage).
FAULT_PAUSE_ENV = "RFM_FAULT_PAUSE"
# The registry calls of a retrain night, in order; a fault point sits after each one.
FAULT_MODEL_LOGGED = "registry:model-logged"  # the model logged to the night's run, no version yet
FAULT_VERSION_REGISTERED = "registry:version-registered"  # the version registered (tagged), never evaluated
FAULT_DECISION_RECORDED = "registry:decision-recorded"  # the promotion decision recorded, the alias not moved
FAULT_ALIAS_MOVED = "registry:alias-moved"  # the alias moved (when promoted), the run not tagged
FAULT_RUN_TAGGED = "registry:run-tagged"  # the night's run tagged with the outcome, clusters not written
REGISTRY_FAULT_POINTS = [
    FAULT_MODEL_LOGGED,
    FAULT_VERSION_REGISTERED,
    FAULT_DECISION_RECORDED,
    FAULT_ALIAS_MOVED,
    FAULT_RUN_TAGGED,
]
# The same for the CLV model of a retrain night (jobs.adapters.clv_registry).
FAULT_CLV_REGISTERED = "clv-registry:version-registered"  # the rfm-clv version registered, the alias not moved
FAULT_CLV_ALIAS_MOVED = "clv-registry:alias-moved"  # the rfm-clv alias moved, the gold not written
