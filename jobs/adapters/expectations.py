"""Great Expectations at the edge: the version-controlled suite, its runner (results store and
Data Docs) and the validation report kept per day, which ingest checks before loading."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs import storage
from jobs.adapters.gx_bucket import SITE as SITE_FOLDER
from jobs.adapters.gx_bucket import BucketProject
from jobs.adapters.transactions import (
    is_adjustment,
    money_integer_digits,
    parse_transactions,
    to_canonical_names,
)
from jobs.config import Settings
from jobs.definitions import FAIL, REQUIRED_COLUMNS, ROW_KEY, SOURCE_FILE, SOURCE_ROW, WARN
from jobs.errors import DataValidationError, PermanentError
from jobs.storage import Location

log = logging.getLogger(__name__)


SUITE_FILE = "transactions.json"


MISSING_CUSTOMER_EXPECTATION = "expect_column_proportion_of_non_null_values_to_be_between"


@dataclass
class ValidationReport:
    """What a validation run concluded, as kept in ``latest.json`` for the day."""

    run_date: str
    success: bool
    row_count: int
    missing_customer_share: float | None
    landing_fingerprint: str
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    validated_at: str = ""
    result_file: str = ""
    quarantined_rows: int = 0
    quarantine_notes: list[str] = field(default_factory=list)
    # one entry per quarantined row: {"source_file", "source_row", "expectations": [...]}
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    # every entry of the day folder: name, decision (data, marker, ignored), size, sha256, inflated
    # bytes, and for data files the records the strict reader counted (jobs.adapters.inventory)
    inventory: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)  # data file -> records (the accounting's total)


@dataclass
class Outcome:
    """What the policies make of a suite result: failures, warnings, rows to quarantine."""

    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quarantine_notes: list[str] = field(default_factory=list)
    quarantined: dict[tuple[str, int], list[str]] = field(default_factory=dict)


def validation_frame(raw: DataFrame, settings: Settings) -> DataFrame:
    """The frame the suite checks: canonical names, parsed values, ``is_adjustment`` and
    ``amount_overflow`` (the quantity and price text of a line whose amount does not fit the
    money type, else null)."""
    parsed = parse_transactions(to_canonical_names(raw, settings), settings)
    if {"invoice", "stock_code"} <= set(parsed.columns):
        parsed = parsed.withColumn("is_adjustment", is_adjustment(settings))
    if {"quantity", "price"} <= set(parsed.columns):
        digits = money_integer_digits(settings)
        amount = F.col("quantity").cast("decimal(10,0)") * F.col("price")  # exact: decimal(29, scale)
        too_large = F.abs(amount) >= F.lit(10**digits).cast(f"decimal({digits + 1},0)")
        parsed = parsed.withColumn(
            "amount_overflow", F.when(too_large, F.concat_ws(" x ", "quantity_raw", "price_raw"))
        )
    return parsed


def expectation_parameters(settings: Settings, day: date, row_count: int) -> dict[str, Any]:
    """Run-date and config dependent values that the suite references as ``$PARAMETER``.

    A day without rows has no missing customer ids: its share threshold is 0.
    """
    start = datetime.combine(day, time.min)
    return {
        "day_start": start,
        "day_end": start + timedelta(days=1),
        "min_customer_id_share": round(1.0 - settings.validation.max_missing_customer_share, 9) if row_count else -1.0,
        **number_patterns(settings),
    }


def number_patterns(settings: Settings) -> dict[str, str]:
    """The number formats, ASCII digits only (``[0-9]``, never ``\\d``, which also matches
    full-width and other Unicode digits that Spark nulls or reads differently)."""
    places, digits = settings.rfm.price_precision, money_integer_digits(settings)
    fraction = rf"(?:\.[0-9]{{1,{places}}})?" if places else ""
    return {
        "quantity_regex": r"^[ \t]*-?[0-9]{1,9}[ \t]*$",  # nine digits always fit an int
        "price_regex": rf"^[ \t]*-?[0-9]{{1,{digits}}}{fraction}[ \t]*$",
        "customer_id_regex": r"^[ \t]*[0-9]+(?:\.0+)?[ \t]*$",
    }


def required_column_expectations() -> list[dict[str, Any]]:
    """``expect_column_to_exist`` for each of ``REQUIRED_COLUMNS``: the columns ingest selects are
    required by the suite from that one definition (the suite file holds no column list)."""
    return [
        {
            "type": "expect_column_to_exist",
            "kwargs": {"column": column},
            "meta": {"rule": "required_column", "why": "ingest loads this column (definitions.REQUIRED_COLUMNS)"},
            "severity": "critical",
        }
        for column in REQUIRED_COLUMNS
    ]


def load_suite(settings: Settings):  # -> gx.ExpectationSuite
    """The version-controlled suite from ``expectations/``; every rule must have a policy."""
    import great_expectations as gx

    spec = json.loads((settings.path("expectations_dir") / SUITE_FILE).read_text())
    spec["expectations"] = required_column_expectations() + spec["expectations"]
    rules = {e.get("meta", {}).get("rule") for e in spec["expectations"]}
    unknown = sorted(str(r) for r in rules - set(settings.validation.policies))
    if unknown:
        raise PermanentError(f"expectation rule(s) {unknown} have no policy under validation.policies in conf/")
    return gx.ExpectationSuite(**spec)


class SuiteRunner:
    """The suite in a file-backed GX project under the validation dir (results store + Data Docs).

    GX runs on pandas: a day is at most a few thousand rows, where GX's pandas engine takes
    ~0.3 s against ~5 s for its Spark engine's 38 metric jobs. Spark still reads and parses the
    files, so the values validated are exactly the values ingested.

    On a bucket (``validation_dir: s3://…``) the project is a temporary local folder seeded from
    the bucket and published back after each Data Docs build (``jobs.adapters.gx_bucket``). Use
    it as a context manager (or call ``close``): closing publishes what is left and removes that
    folder; locally it does nothing.
    """

    def __init__(self, settings: Settings) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.settings = settings
        location = settings.path("validation_dir")
        self.bucket = BucketProject(location) if storage.is_remote(location) else None
        self.project = self.bucket.folder if self.bucket else location
        try:
            self.context = gx.get_context(mode="file", project_root_dir=str(self.project))
            self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
            source = self.context.data_sources.add_or_update_pandas(name="landed")
            asset = next((a for a in source.assets if a.name == "transactions"), None) or source.add_dataframe_asset(
                name="transactions"
            )
            batch = next((b for b in asset.batch_definitions if b.name == "day"), None) or (
                asset.add_batch_definition_whole_dataframe("day")
            )
            suite = self.context.suites.add_or_update(load_suite(settings))
            self.definition = self.context.validation_definitions.add_or_update(
                gx.ValidationDefinition(name="transactions-day", data=batch, suite=suite)
            )
        except BaseException:
            self.close(publish=False)
            raise

    def __enter__(self) -> SuiteRunner:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        self.close(publish=error_type is None)

    def close(self, publish: bool = True) -> None:
        """On a bucket: publish the results and pages not yet published (``publish``), then remove
        the temporary project. Locally: nothing to do."""
        if self.bucket is not None:
            self.bucket.close(publish)

    def run(self, frame: pd.DataFrame, day: date) -> Any:
        """Validate one day's rows; the result is also kept in the GX results store."""
        parameters = expectation_parameters(self.settings, day, row_count=len(frame))
        from great_expectations.core.run_identifier import RunIdentifier

        result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ROW_KEY}
        return self.definition.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters,
            result_format=result_format,
            run_id=RunIdentifier(run_name=day.isoformat()),  # the day names its Data Docs page
        )

    def build_data_docs(self, days: list[date] | None = None) -> Location:
        """Render the Data Docs pages of ``days`` (default: of every result kept) and the index;
        returns the index page. A night renders its own page only: rendering every kept result
        would grow with the history (7.6 s against 1.1 s at a year of results). On a bucket the
        results and pages are then published (the index last)."""
        from jobs.adapters.data_docs import escape_stored_results, localise_site

        keys = self.context.validation_results_store.list_keys()
        if days is not None:
            names = {day.isoformat() for day in days}
            keys = [k for k in keys if k.run_id.run_name in names]
        escape_stored_results(self.context, keys)  # landed values render as text, never as markup
        if days is None:
            self.context.build_data_docs()
        else:
            self.context.build_data_docs(resource_identifiers=keys)
        localise_site(self.project / SITE_FOLDER)  # CSS/JS from the site itself, not from CDNs
        if self.bucket is not None:
            self.bucket.publish()
        return data_docs_site(self.settings) / "index.html"

    def day_page(self, day: date) -> Location | None:
        """The Data Docs page of the latest validation of ``day`` (None before one is built)."""
        return day_page(self.settings, day)


def data_docs_site(settings: Settings) -> Location:
    """The folder of the Data Docs site: a local ``Path``, or a ``UPath`` on the bucket."""
    return settings.path("validation_dir") / SITE_FOLDER


def site_pages(site: Location, day: date) -> list[str]:
    """The Data Docs pages of ``day``'s validations, relative to ``site`` and sorted (the latest
    run last): ``validations/<suite>/<day>/<run time>/<batch>.html``. On a bucket: one listing of
    the suites, one of each suite's day (never a walk of the whole site)."""
    if not storage.is_remote(site):
        return sorted(p.relative_to(site).as_posix() for p in site.glob(f"validations/*/{day.isoformat()}/*/*.html"))
    fs, root = site.fs, site.path.rstrip("/")
    try:
        suites = fs.ls(f"{root}/validations", detail=False)
    except FileNotFoundError:
        return []
    keys = (key for suite in suites for key in fs.find(f"{suite.rstrip('/')}/{day.isoformat()}"))
    pages = (key.removeprefix(root + "/") for key in keys if key.endswith(".html"))
    return sorted(rel for rel in pages if len(rel.split("/")) == 5)


def day_page(settings: Settings, day: date) -> Location | None:
    """The Data Docs page of the latest validation of ``day``: validations/<suite>/<day>/<run time>/<batch>.html."""
    site = data_docs_site(settings)
    pages = site_pages(site, day)
    return site / pages[-1] if pages else None


def _exception_message(exception_info: dict[str, Any] | None) -> str | None:
    """GX keeps an exception either at the top level or per metric; the first message, if any."""
    if not exception_info:
        return None
    candidates = [exception_info, *[v for v in exception_info.values() if isinstance(v, dict)]]
    for info in candidates:
        if info.get("raised_exception"):
            return str(info.get("exception_message", "")).splitlines()[0][:200]
    return None


def expectation_name(result: Any) -> str:
    """``type(column)`` of an expectation's result."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


def rule_of(result: Any) -> str:
    return (result.expectation_config.meta or {}).get("rule", "")


def unexpected_keys(result: Any) -> list[tuple[str, int]] | None:
    """The (file, row) of each row that broke an expectation; None when GX gave no row list."""
    entries = (result.result or {}).get("unexpected_index_list")
    if entries is None:
        return None
    return [(str(e[SOURCE_FILE]), int(e[SOURCE_ROW])) for e in entries]


def _examples(result: Any, frame: pd.DataFrame | None) -> list[str]:
    """Up to three rows that broke ``result``: file, row and the value as read."""
    keys = unexpected_keys(result) or []
    column = result.expectation_config.kwargs.get("column")
    if frame is None or not keys or column not in frame.columns:
        return [repr(v) for v in ((result.result or {}).get("partial_unexpected_list") or [])[:3]]
    shown = f"{column}_raw" if f"{column}_raw" in frame.columns else column
    by_key = frame.set_index([SOURCE_FILE, SOURCE_ROW])[shown]
    shown_values = [by_key.get((file, row)) for file, row in keys[:3]]
    return [
        f"{file} row {row}: {'(blank)' if pd.isna(v) else repr(v)}"
        for (file, row), v in zip(keys, shown_values, strict=False)
    ]


def describe_failure(result: Any, settings: Settings, row_count: int, frame: pd.DataFrame | None = None) -> str:
    """One line for a failed expectation: what, on which column, how many rows, examples."""
    config = result.expectation_config
    column = config.kwargs.get("column")
    what = expectation_name(result)
    details = result.result or {}
    if config.type == "expect_column_to_exist":
        accepted = ", ".join(settings.columns.get(column, [column]))
        return f"{what}: required column missing (accepted source names: {accepted})"
    error = _exception_message(result.exception_info)
    if error:
        return f"{what}: could not be evaluated ({error})"
    if "unexpected_count" in details:
        examples = _examples(result, frame)
        shown = f", e.g. {'; '.join(examples)}" if examples else ""
        return f"{what}: {details['unexpected_count']} of {details.get('element_count')} rows broke it{shown}"
    if config.type == MISSING_CUSTOMER_EXPECTATION and details.get("observed_value") is not None:
        missing = 1.0 - float(details["observed_value"])
        return (
            f"{what}: {round(missing * row_count)} of {row_count} rows have no customer id ({missing:.1%}; fails at "
            f"{settings.validation.max_missing_customer_share:.0%} or more)"
        )
    observed = details.get("observed_value")
    return f"{what}: observed {observed if observed is None else str(observed)}"


def apply_policies(results: list[Any], settings: Settings, frame: pd.DataFrame) -> Outcome:
    """Each broken expectation under its rule's policy (``validation.policies``).

    ``fail``: the day fails. ``warn``: a warning. ``quarantine``: its rows are held back, unless
    more than the rule's ``max_share`` of the day's rows broke it: then the day fails. An
    expectation that could not be evaluated, or gave no row list, fails the day.
    """
    outcome, rows = Outcome(), len(frame)
    for result in results:
        if result.success:
            continue
        rule = rule_of(result)
        policy = settings.validation.policies[rule].policy
        line = f"{describe_failure(result, settings, rows, frame)} [rule {rule}: {policy}]"
        keys = unexpected_keys(result)
        if policy == FAIL or _exception_message(result.exception_info):
            outcome.failures.append(line)
        elif policy == WARN:
            outcome.warnings.append(line)
        elif keys is None:
            outcome.failures.append(f"{line}: no row list to quarantine")
        elif rows and len(keys) / rows > settings.validation.max_share(rule):
            limit = settings.validation.max_share(rule)
            outcome.failures.append(f"{line}: {len(keys) / rows:.2%} of the day's rows, above the {limit:.2%} limit")
        else:
            outcome.quarantine_notes.append(line)
            for key in keys:
                outcome.quarantined.setdefault(key, []).append(f"{rule}: {expectation_name(result)}")
    day_limit = settings.validation.quarantine_max_day_share
    if rows and len(outcome.quarantined) / rows > day_limit:
        outcome.failures.append(
            f"{len(outcome.quarantined)} of {rows} rows ({len(outcome.quarantined) / rows:.2%}) would be quarantined "
            f"by all rules together, above validation.quarantine_max_day_share={day_limit:.2%}"
        )
    return outcome


def missing_customer_share(results: list[Any], row_count: int) -> float | None:
    """The share of the day's rows without a customer id (None for an empty day)."""
    missing_share = None
    for r in results:
        observed = r.result.get("observed_value")
        if r.expectation_config.type == MISSING_CUSTOMER_EXPECTATION and observed is not None and row_count:
            missing_share = 1.0 - float(observed)
    return missing_share


def missing_customer_warnings(settings: Settings, missing_share: float | None) -> list[str]:
    warnings = []
    warn_at = settings.validation.warn_missing_customer_share
    if missing_share is not None and warn_at < missing_share < settings.validation.max_missing_customer_share:
        warnings.append(
            f"{missing_share:.1%} of rows have no customer id (warning above {warn_at:.0%}, "
            f"failure at {settings.validation.max_missing_customer_share:.0%} or more)"
        )
    return warnings


def _write_json(path: Location, payload: dict[str, Any]) -> None:
    """``payload`` as JSON at ``path``, whole or not at all: locally a temporary file renamed
    over it; on a bucket a single put (an object appears whole)."""
    if storage.is_remote(path):
        path.fs.pipe_file(path.path, json.dumps(payload, indent=2, default=str).encode())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    os.replace(tmp, path)


def day_results_dir(settings: Settings, day: date) -> Location:
    return settings.path("validation_dir") / "results" / f"date={day.isoformat()}"


def collect_day(frame: DataFrame, settings: Settings, day: date) -> pd.DataFrame:
    """The validation frame as pandas, refusing days too large for one driver's memory."""
    rows = frame.count()
    if rows > settings.validation.max_rows_per_day:
        raise DataValidationError(
            f"{day} has {rows} rows, more than validation.max_rows_per_day={settings.validation.max_rows_per_day}"
        )
    return frame.toPandas()


def check_day(
    runner: SuiteRunner,
    frame: pd.DataFrame,
    day: date,
    landing_fingerprint: str,
    inventory: list[dict[str, Any]] | None = None,
    records: dict[str, int] | None = None,
) -> ValidationReport:
    """Run the suite on one day's prepared rows, apply the policies and keep the result, passed or failed."""
    result = runner.run(frame, day)
    outcome = apply_policies(result.results, runner.settings, frame)
    missing_share = missing_customer_share(result.results, len(frame))
    warnings = outcome.warnings + missing_customer_warnings(runner.settings, missing_share)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    result_file = day_results_dir(runner.settings, day) / f"result-{stamp}.json"
    report = ValidationReport(
        run_date=day.isoformat(),
        success=not outcome.failures,
        row_count=len(frame),
        missing_customer_share=missing_share,
        landing_fingerprint=landing_fingerprint,
        failures=outcome.failures,
        warnings=warnings,
        validated_at=stamp,
        result_file=str(result_file),
        quarantined_rows=len(outcome.quarantined),
        quarantine_notes=outcome.quarantine_notes,
        quarantined=[
            {SOURCE_FILE: file, SOURCE_ROW: row, "expectations": broken}
            for (file, row), broken in sorted(outcome.quarantined.items())
        ],
        inventory=inventory or [],
        records=records or {},
    )
    _write_json(result_file, {"report": asdict(report), "great_expectations": result.to_json_dict()})
    _write_json(day_results_dir(runner.settings, day) / "latest.json", asdict(report))
    for warning in warnings:
        log.warning("%s: %s", day, warning)
    if report.success:
        for note in outcome.quarantine_notes:
            log.warning("%s: quarantined: %s", day, note)
    return report


def raise_if_failed(reports: list[ValidationReport]) -> None:
    """Raise one error naming every failed day and expectation."""
    failed = [r for r in reports if not r.success]
    if failed:
        details = " | ".join(f"{r.run_date}: " + "; ".join(r.failures) + f" (result: {r.result_file})" for r in failed)
        raise DataValidationError(f"validation failed for {len(failed)} day(s); nothing was written. {details}")


def read_latest_report(settings: Settings, day: date) -> ValidationReport | None:
    """The latest validation report kept for ``day``, if any."""
    path = day_results_dir(settings, day) / "latest.json"
    return ValidationReport(**json.loads(path.read_text())) if path.is_file() else None
