"""The segment explorer's data layer: filters in, pandas/arrow results out — no JVM, no Dash.

The gold tables are read with delta-rs (one snapshot partition at a time, only the columns
the views use) and queried with DuckDB over arrow. Every read is cached under the tables'
Delta versions: a new snapshot (a new commit) changes the key, so it shows up without a
restart, and an unchanged lake is never read twice.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from deltalake import DeltaTable

from jobs import storage
from jobs.adapters.publish import published_versions
from jobs.config import Settings
from jobs.definitions import (
    AT_RISK_VALUE,
    CLV_COLUMNS,
    GONE_CUSTOMER,
    LABEL_SCHEMES,
    NEW_CUSTOMER,
    RFM_COLUMNS,
    RFM_MEASURES,
    SCORECARD_ALL,
    SCORECARD_COLUMNS,
)

# The clv step's columns (null in a lake or a snapshot the clv step has not scored).
VALUE_COLUMNS = {**{column: pa.float64() for column in CLV_COLUMNS.values()}, AT_RISK_VALUE: pa.bool_()}
# the value view's boxes: P(alive), the calibrated P(purchase) (the one the at-risk flag reads) and the CLV
VALUE_MEASURES = [CLV_COLUMNS["p_alive"], CLV_COLUMNS["p_purchase_calibrated"], CLV_COLUMNS["clv"]]
CUSTOMER_COLUMNS = [
    "customer_id",
    "country",
    *RFM_COLUMNS,
    "rfm_segment",
    "cluster",
    "cluster_label",
    "first_purchase_date",
    "last_purchase_date",
    "tenure_days",
    *VALUE_COLUMNS,
]

# AG Grid filter model → SQL; the value is bound as a parameter, never pasted.
_COMPARISONS = {
    "equals": "{c} = ?",
    "notEqual": "{c} <> ?",
    "lessThan": "{c} < ?",
    "lessThanOrEqual": "{c} <= ?",
    "greaterThan": "{c} > ?",
    "greaterThanOrEqual": "{c} >= ?",
    "contains": "contains(lower({c}), lower(?))",
    "notContains": "NOT contains(lower({c}), lower(?))",
    "startsWith": "starts_with(lower({c}), lower(?))",
    "endsWith": "ends_with(lower({c}), lower(?))",
}


class InvalidInput(ValueError):
    """A request the dashboard refuses (answered 400): an unknown scheme, a bad date, a page too large."""


@dataclass(frozen=True)
class Filters:
    """What every view is filtered by. ``segment``/``country`` None means all; ``at_risk_only``
    (the customer table's win-back toggle) keeps the customers flagged ``at_risk_value``."""

    snapshot_date: date
    scheme: str = "cluster"
    segment: str | None = None
    country: str | None = None
    at_risk_only: bool = False

    def __post_init__(self) -> None:
        if self.scheme not in LABEL_SCHEMES:
            raise InvalidInput(f"unknown label scheme {self.scheme!r}: one of {', '.join(LABEL_SCHEMES)}")

    @property
    def label_column(self) -> str:
        return LABEL_SCHEMES[self.scheme]


class SegmentLake:
    """Read-only access to ``gold/customer_segments`` and ``gold/segment_summary``."""

    def __init__(
        self,
        segments_path: Path | storage.Location,
        summary_path: Path | storage.Location,
        segment_order: dict[str, list[str]],
        published_path: Path | storage.Location | None = None,
        filter_limits: FilterLimits | None = None,
        scorecard_path: Path | storage.Location | None = None,
    ) -> None:
        self.segments_path, self.summary_path = str(segments_path), str(summary_path)
        self.published_path = str(published_path) if published_path else None
        self.scorecard_path = str(scorecard_path) if scorecard_path else None
        self._table_names = {self.segments_path: "gold_customer_segments", self.summary_path: "gold_segment_summary"}
        # local paths or locations on a bucket (jobs.storage: delta-rs with storage options)
        self._locations = {str(p): p for p in (segments_path, summary_path, published_path, scorecard_path) if p}
        self.segment_order = segment_order
        self.filter_limits = filter_limits or FilterLimits()
        self._tables: dict[str, DeltaTable] = {}
        self._lock = threading.Lock()
        self._db = duckdb.connect()
        self._snapshot = lru_cache(maxsize=8)(self._read_snapshot)
        self._summary = lru_cache(maxsize=2)(self._read_summary)
        self._counts = lru_cache(maxsize=2)(self._read_counts)
        self._flows = lru_cache(maxsize=16)(self._read_flows)
        self._numeric = lru_cache(maxsize=4)(self._read_numeric)
        self._published_at = lru_cache(maxsize=2)(self._read_published)
        self._scorecard = lru_cache(maxsize=4)(self._read_scorecard)

    @classmethod
    def from_settings(cls, settings: Settings) -> SegmentLake:
        """The pipeline's gold tables; segments ordered best first as configured."""
        rules = list(dict.fromkeys(rule.segment for rule in settings.labels.segment_rules))
        return cls(
            settings.table_path("gold_customer_segments"),
            settings.table_path("gold_segment_summary"),
            {
                "cluster": list(dict.fromkeys([*settings.labels.cluster_labels, settings.labels.unmatched_label])),
                "rfm": rules,
            },
            settings.table_path("gold_published"),
            FilterLimits(settings.dashboard.filter_max_conditions, settings.dashboard.filter_max_chars),
            settings.table_path("gold_forecast_scorecard"),
        )

    # -- versions and the cached reads -------------------------------------------------------

    def _delta(self, path: str, version: int | None = None) -> DeltaTable:
        return storage.delta_table(self._locations[path], version)

    def _is_delta(self, path: str) -> bool:
        return storage.is_delta_table(self._locations[path])

    def _published(self) -> dict[date, dict[str, int]] | None:
        """Published dates and their gold versions (None: a lake without publish records); the
        record table's log is re-listed incrementally and read again only when it moved."""
        if not self.published_path:
            return None
        with self._lock:
            table = self._tables.get(self.published_path)
            if table is None:
                if not self._is_delta(self.published_path):
                    return None
                table = self._tables[self.published_path] = self._delta(self.published_path)
            else:
                table.update_incremental()
            version = table.version()
        return self._published_at(version)

    def _read_published(self, version: int) -> dict[date, dict[str, int]]:
        return published_versions(self._locations[self.published_path], version) or {}

    def _version(self, path: str) -> int | None:
        """The version readers see: the newest published one (None if nothing is published), or
        without publish records the table's latest (the log is re-listed incrementally)."""
        published = self._published()
        if published is not None:
            name = self._table_names[path]
            return max((versions[name] for versions in published.values()), default=None)
        with self._lock:
            table = self._tables.get(path)
            if table is None:
                if not self._is_delta(path):
                    return None
                table = self._tables[path] = self._delta(path)
            else:
                table.update_incremental()
            return table.version()

    def _read_snapshot(self, version: int, day: date) -> pa.Table:
        """The view columns of one snapshot; the value columns as nulls where the table has none yet."""
        table = self._delta(self.segments_path, version)
        present = {field.name for field in table.schema().fields}
        rows = table.to_pyarrow_table(
            filters=[("snapshot_date", "=", day)], columns=[c for c in CUSTOMER_COLUMNS if c in present]
        )
        for column, kind in VALUE_COLUMNS.items():
            if column not in present:
                rows = rows.append_column(column, pa.nulls(rows.num_rows, kind))
        return rows.select(CUSTOMER_COLUMNS)

    def _read_summary(self, version: int) -> pd.DataFrame:
        summary = self._delta(self.summary_path, version).to_pandas()
        summary["snapshot_date"] = pd.to_datetime(summary["snapshot_date"]).dt.date
        summary["monetary_total"] = summary["monetary_total"].astype(float)
        return summary

    def _read_counts(self, version: int) -> pd.DataFrame:
        """Customers per snapshot, label of each scheme and country — one scan of all snapshots."""
        dataset = self._delta(self.segments_path, version).to_pyarrow_dataset()
        return self._query(
            "SELECT snapshot_date, cluster_label, rfm_segment, country, count(*) AS customers "
            "FROM dataset GROUP BY ALL",
            dataset=dataset,
        )

    def _query(self, sql: str, params: Sequence[Any] = (), **tables: Any) -> pd.DataFrame:
        return self._relation(sql, params, **tables).df()

    def _relation(self, sql: str, params: Sequence[Any] = (), **tables: Any) -> duckdb.DuckDBPyRelation:
        cursor = self._db.cursor()  # one connection per call: callbacks run on several threads
        for name, table in tables.items():
            cursor.register(name, table)
        return cursor.sql(sql, params=list(params))

    def snapshot(self, day: date) -> pa.Table | None:
        """The customers of one snapshot (the view columns) at its published version; None when the
        table is absent or the date is not published."""
        published = self._published()
        if published is not None:
            versions = published.get(day)
            return None if versions is None else self._snapshot(versions["gold_customer_segments"], day)
        version = self._version(self.segments_path)
        return None if version is None else self._snapshot(version, day)

    def warm_up(self) -> None:
        """Fill the cache for the page's defaults: the latest snapshot, per-country counts, latest migrations.

        Cheap when nothing changed (cache hits); after a new snapshot it moves the slow first reads
        off the first user's request. Meant for a background thread.
        """
        dates = self.snapshot_dates()
        if not dates:
            return
        version = self._version(self.segments_path)
        self._numeric(version, dates[-1])  # reads the snapshot too
        self._counts(version)
        for scheme in LABEL_SCHEMES if len(dates) > 1 else ():
            self.migration(scheme, dates[-2], dates[-1])

    # -- what the filters can take ------------------------------------------------------------

    def has_data(self) -> bool:
        return bool(self.snapshot_dates())

    def snapshot_dates(self) -> list[date]:
        """Snapshot dates published (or, without publish records, present in ``gold/customer_segments``)."""
        published = self._published()
        if published is not None:
            return sorted(published)
        if self._version(self.segments_path) is None:
            return []
        with self._lock:
            partitions = self._tables[self.segments_path].partitions()
        return sorted(date.fromisoformat(p["snapshot_date"]) for p in partitions)

    def countries(self, day: date) -> list[str]:
        table = self.snapshot(day)
        return [] if table is None else sorted(c for c in table.column("country").unique().to_pylist() if c)

    def segments(self, scheme: str, day: date) -> list[str]:
        """The scheme's segments present in the snapshot, in the configured order (others last)."""
        table = self.snapshot(day)
        if table is None:
            return []
        present = set(table.column(LABEL_SCHEMES[scheme]).unique().to_pylist()) - {None}
        return self._ordered(scheme, present)

    def _ordered(self, scheme: str, names: set[str]) -> list[str]:
        order = self.segment_order.get(scheme, [])
        return [n for n in order if n in names] + sorted(names - set(order))

    # -- views ---------------------------------------------------------------------------------

    def _where(self, filters: Filters, alias: str = "") -> tuple[str, list[Any]]:
        prefix = f"{alias}." if alias else ""
        clauses, params = ["TRUE"], []
        if filters.segment:
            clauses.append(f"{prefix}{filters.label_column} = ?")
            params.append(filters.segment)
        if filters.country:
            clauses.append(f"{prefix}country = ?")
            params.append(filters.country)
        return " AND ".join(clauses), params

    def overview(self, filters: Filters) -> pd.DataFrame:
        """One row per segment: customers, customer and revenue shares, mean R/F/M, monetary total.

        Without a country this is the summary table (shares of the whole snapshot); with one it is
        computed from the customers of that country (shares within the country).
        """
        columns = [
            "segment",
            "customers",
            "customer_share",
            "revenue_share",
            "mean_recency_days",
            "mean_frequency",
            "mean_monetary",
            "monetary_total",
        ]
        if filters.country:
            frame = self._overview_of_country(filters)
        else:
            version = self._version(self.summary_path)
            if version is None:
                return pd.DataFrame(columns=columns)
            summary = self._summary(version)
            frame = summary[
                (summary["snapshot_date"] == filters.snapshot_date) & (summary["label_scheme"] == filters.scheme)
            ]
        if filters.segment:
            frame = frame[frame["segment"] == filters.segment]
        order = {name: i for i, name in enumerate(self._ordered(filters.scheme, set(frame["segment"])))}
        return frame.sort_values("segment", key=lambda s: s.map(order))[columns].reset_index(drop=True)

    def _overview_of_country(self, filters: Filters) -> pd.DataFrame:
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return pd.DataFrame(columns=["segment"])
        return self._query(
            f"""
            SELECT {filters.label_column} AS segment, count(*) AS customers,
                   count(*) / sum(count(*)) OVER () AS customer_share,
                   coalesce(sum(monetary) / nullif(sum(sum(monetary)) OVER (), 0), 0)::DOUBLE AS revenue_share,
                   avg(recency_days) AS mean_recency_days, avg(frequency) AS mean_frequency,
                   avg(monetary::DOUBLE) AS mean_monetary, sum(monetary)::DOUBLE AS monetary_total
            FROM segments WHERE country = ? GROUP BY 1
            """,
            [filters.country],
            segments=table,
        )

    def sizes_over_time(self, scheme: str, segment: str | None = None, country: str | None = None) -> pd.DataFrame:
        """Customers per snapshot date and segment (summary table; per-country counts without a country)."""
        if country:
            version = self._version(self.segments_path)
            if version is None:
                return pd.DataFrame(columns=["snapshot_date", "segment", "customers"])
            counts = self._counts(version)
            counts = counts[counts["country"] == country].rename(columns={LABEL_SCHEMES[scheme]: "segment"})
            sizes = counts.groupby(["snapshot_date", "segment"], as_index=False)["customers"].sum()
            sizes["snapshot_date"] = pd.to_datetime(sizes["snapshot_date"]).dt.date
        else:
            version = self._version(self.summary_path)
            if version is None:
                return pd.DataFrame(columns=["snapshot_date", "segment", "customers"])
            summary = self._summary(version)
            sizes = summary[summary["label_scheme"] == scheme][["snapshot_date", "segment", "customers"]]
        if segment:
            sizes = sizes[sizes["segment"] == segment]
        published = self._published()
        if published is not None:
            sizes = sizes[sizes["snapshot_date"].isin(set(published))]
        return sizes.sort_values(["snapshot_date", "segment"]).reset_index(drop=True)

    def box_stats(self, filters: Filters, measures: Sequence[str] = tuple(RFM_MEASURES)) -> pd.DataFrame:
        """Per segment and measure: customers, min, q1, median, q3, max (linear-interpolated quartiles),
        mean; a measure no customer of a segment has a value for (not scored) is left out."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return pd.DataFrame()
        where, params = self._where(filters)
        per_measure = ", ".join(
            f"min({m})::DOUBLE AS {m}_min, max({m})::DOUBLE AS {m}_max, avg({m}::DOUBLE) AS {m}_mean, "
            f"count({m}) AS {m}_count, quantile_cont({m}::DOUBLE, [0.25, 0.5, 0.75]) AS {m}_q"
            for m in measures
        )
        wide = self._query(
            f"SELECT {filters.label_column} AS segment, count(*) AS customers, {per_measure} FROM segments "
            f"WHERE {where} GROUP BY 1",
            params,
            segments=table,
        )
        return pd.DataFrame(
            [
                {
                    "segment": row["segment"],
                    "measure": m,
                    "customers": row["customers"],
                    "min": row[f"{m}_min"],
                    "q1": row[f"{m}_q"][0],
                    "median": row[f"{m}_q"][1],
                    "q3": row[f"{m}_q"][2],
                    "max": row[f"{m}_max"],
                    "mean": row[f"{m}_mean"],
                }
                for row in wide.to_dict("records")
                for m in measures
                if row[f"{m}_count"] > 0
            ]
        )

    def value_stats(self, filters: Filters) -> pd.DataFrame:
        """The predicted value per segment: box statistics of P(alive), P(purchase in the horizon) and
        12-month CLV (``box_stats`` over ``VALUE_MEASURES``); empty when the snapshot has no scores."""
        return self.box_stats(filters, VALUE_MEASURES)

    def at_risk_counts(self, filters: Filters) -> pd.DataFrame:
        """Per segment: customers flagged ``at_risk_value`` and their monetary total."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return pd.DataFrame(columns=["segment", "customers", "monetary"])
        where, params = self._where(filters)
        return self._query(
            f"SELECT {filters.label_column} AS segment, count(*) AS customers, sum(monetary)::DOUBLE AS monetary "
            f"FROM segments WHERE {where} AND {AT_RISK_VALUE} GROUP BY 1 ORDER BY 1",
            params,
            segments=table,
        )

    def at_risk_crosstab(self, filters: Filters) -> pd.DataFrame:
        """The at-risk-value customers of the snapshot (and country) crossed by cluster label (rows) and
        RFM segment (columns), both in their configured order; empty when none is flagged."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return pd.DataFrame()
        where, params = self._where(Filters(filters.snapshot_date, country=filters.country))
        counts = self._query(
            f"SELECT cluster_label, rfm_segment, count(*) AS customers FROM segments "
            f"WHERE {where} AND {AT_RISK_VALUE} GROUP BY ALL",
            params,
            segments=table,
        )
        if counts.empty:
            return pd.DataFrame()
        crossed = counts.pivot(index="cluster_label", columns="rfm_segment", values="customers").fillna(0).astype(int)
        return crossed.loc[
            self._ordered("cluster", set(crossed.index)), self._ordered("rfm", set(crossed.columns))
        ].rename_axis(index="cluster_label", columns="rfm_segment")

    def forecast_scorecard(self, day: date) -> pd.DataFrame:
        """The forecast-vs-actual scorecard of night ``day`` (``SCORECARD_COLUMNS``, the overall row first)
        at its published version; empty when that night published none (no forecast 90 nights earlier,
        or a night from before the scorecard)."""
        published = self._published()
        if self.scorecard_path is None or not self._is_delta(self.scorecard_path):
            return pd.DataFrame(columns=SCORECARD_COLUMNS)
        if published is None:
            with self._lock:
                version = self._delta(self.scorecard_path).version()
        else:
            version = (published.get(day) or {}).get("gold_forecast_scorecard")
        if version is None:
            return pd.DataFrame(columns=SCORECARD_COLUMNS)
        return self._scorecard(version, day)

    def _read_scorecard(self, version: int, day: date) -> pd.DataFrame:
        rows = self._delta(self.scorecard_path, version).to_pandas(filters=[("snapshot_date", "=", day)])
        overall = (rows["label_scheme"] == SCORECARD_ALL).astype(int)
        order = rows.assign(overall=overall).sort_values(
            ["overall", "label_scheme", "segment"], ascending=[False, True, True]
        )
        return order[SCORECARD_COLUMNS].reset_index(drop=True)

    def histograms(self, filters: Filters, bins: int = 30, log_scale: bool = False) -> pd.DataFrame:
        """Per segment and measure: bin edges and counts, on bins shared by the segments.

        With ``log_scale`` frequency and monetary get log-spaced bins from their smallest
        positive value (values ≤ 0 fall in the first bin); recency stays linear. Counted with
        numpy on the snapshot's cached numeric columns (labels as dictionary codes).
        """
        version = self._version(self.segments_path)
        if version is None:
            return pd.DataFrame()
        columns = self._numeric(version, filters.snapshot_date)
        codes, names = columns[filters.label_column]
        selected = np.ones(len(codes), dtype=bool)
        for column, value in ((filters.label_column, filters.segment), ("country", filters.country)):
            if value:
                column_codes, column_names = columns[column]
                selected &= column_codes == (column_names.index(value) if value in column_names else -2)
        if not selected.any():
            return pd.DataFrame()
        segment_codes = codes[selected]
        present = np.unique(segment_codes)
        frames = []
        for measure in RFM_MEASURES:
            values = columns[measure][selected]
            positive = values[values > 0]
            log_spaced = log_scale and measure != "recency_days" and len(positive) > 0
            edges = bin_edges(values.min(), values.max(), positive.min() if log_spaced else None, bins)
            index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
            counts = np.bincount(segment_codes * bins + index, minlength=len(names) * bins).reshape(len(names), bins)
            frames += [
                pd.DataFrame(
                    {
                        "segment": names[c],
                        "measure": measure,
                        "bin_start": edges[:-1],
                        "bin_end": edges[1:],
                        "customers": counts[c],
                    }
                )
                for c in present
            ]
        return pd.concat(frames, ignore_index=True)

    def _read_numeric(self, version: int, day: date) -> dict[str, Any]:
        """The snapshot's measures as float arrays and its labels and country as (codes, names)."""
        table = self._snapshot(version, day)
        columns: dict[str, Any] = {m: table[m].cast(pa.float64()).to_numpy() for m in RFM_MEASURES}
        for column in (*LABEL_SCHEMES.values(), "country"):
            encoded = table[column].combine_chunks().dictionary_encode()
            columns[column] = (encoded.indices.fill_null(-1).to_numpy(), encoded.dictionary.to_pylist())
        return columns

    def scatter_points(self, filters: Filters, max_points: int) -> tuple[pd.DataFrame, int]:
        """Customers for the R-vs-M scatter and how many match; a repeatable random sample above ``max_points``."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return pd.DataFrame(), 0
        where, params = self._where(filters)
        matching = f"SELECT count(*) FROM segments WHERE {where}"
        total = int(self._relation(matching, params, segments=table).fetchall()[0][0])
        sample = f"USING SAMPLE reservoir({int(max_points)} ROWS) REPEATABLE (42)" if total > max_points else ""
        points = self._query(
            f"""SELECT * FROM (SELECT customer_id, {filters.label_column} AS segment, recency_days, frequency,
                       monetary::DOUBLE AS monetary FROM segments WHERE {where}) {sample}""",
            params,
            segments=table,
        )
        return points, total

    def migration(
        self, scheme: str, earlier: date, later: date, segment: str | None = None, country: str | None = None
    ) -> pd.DataFrame:
        """Customers and monetary value moving from their ``earlier`` segment to their ``later`` one.

        Every customer of either snapshot counts once: absent earlier → source ``new``, absent
        later → target ``gone``. Monetary is the later snapshot's (the earlier one for ``gone``).
        A segment keeps flows from or into it; the country is the later snapshot's (else earlier).
        """
        version = self._version(self.segments_path)
        if version is None:
            return pd.DataFrame(columns=["source", "target", "customers", "monetary"])
        flows = self._flows(version, scheme, earlier, later)
        if segment:
            flows = flows[(flows["source"] == segment) | (flows["target"] == segment)]
        if country:
            flows = flows[flows["country"] == country]
        moves = flows.groupby(["source", "target"], as_index=False)[["customers", "monetary"]].sum()
        return moves.sort_values(["customers", "source", "target"], ascending=[False, True, True], ignore_index=True)

    def _read_flows(self, version: int, scheme: str, earlier: date, later: date) -> pd.DataFrame:
        """Moves per source, target and country: the join of two snapshots runs once per pair."""
        column = LABEL_SCHEMES[scheme]
        return self._query(
            f"""
            WITH moves AS (
              SELECT coalesce(b.{column}, '{NEW_CUSTOMER}') AS source, coalesce(a.{column}, '{GONE_CUSTOMER}') AS target,
                     coalesce(a.monetary, b.monetary)::DOUBLE AS monetary, coalesce(a.country, b.country) AS country
              FROM (SELECT customer_id, {column}, monetary, country FROM before) b
              FULL OUTER JOIN (SELECT customer_id, {column}, monetary, country FROM after) a USING (customer_id))
            SELECT source, target, country, count(*) AS customers, sum(monetary) AS monetary FROM moves GROUP BY ALL
            """,
            before=self._snapshot(version, earlier),
            after=self._snapshot(version, later),
        )

    def customer_page(
        self,
        filters: Filters,
        start: int,
        end: int,
        sort_model: list[dict] | None = None,
        filter_model: dict | None = None,
    ) -> tuple[list[dict], int]:
        """Rows ``start``..``end`` of the filtered, sorted customers (JSON-ready) and how many match."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return [], 0
        where, params = self._customer_where(filters, filter_model)
        total = int(
            self._relation(f"SELECT count(*) FROM segments WHERE {where}", params, segments=table).fetchall()[0][0]
        )
        rows = self._relation(
            f"{self._customer_select(where, sort_model)} LIMIT ? OFFSET ?",
            [*params, max(end - start, 0), start],
            segments=table,
        ).to_arrow_table()
        return rows.to_pylist(), total

    def customer_csv(
        self, filters: Filters, sort_model: list[dict] | None = None, filter_model: dict | None = None
    ) -> bytes:
        """Every customer in the filter (dashboard filters and the table's column filters) as CSV."""
        table = self.snapshot(filters.snapshot_date)
        if table is None:
            return (",".join(CUSTOMER_COLUMNS) + "\n").encode()
        where, params = self._customer_where(filters, filter_model)
        rows = self._relation(
            self._customer_select(where, sort_model, exact=True), params, segments=table
        ).to_arrow_table()
        buffer = io.BytesIO()
        pa_csv.write_csv(rows, buffer)
        return buffer.getvalue()

    def _customer_where(self, filters: Filters, filter_model: dict | None) -> tuple[str, list[Any]]:
        where, params = self._where(filters)
        if filters.at_risk_only:
            where = f"{where} AND {AT_RISK_VALUE}"
        grid_where, grid_params = grid_filter_sql(filter_model or {}, self.filter_limits)
        return f"{where} AND {grid_where}", params + grid_params

    @staticmethod
    def _customer_select(where: str, sort_model: list[dict] | None, exact: bool = False) -> str:
        """The customer columns (dates as text, monetary as a number unless ``exact``), sorted."""
        shown = {
            "monetary": "monetary::DOUBLE AS monetary",
            "first_purchase_date": "first_purchase_date::VARCHAR AS first_purchase_date",
            "last_purchase_date": "last_purchase_date::VARCHAR AS last_purchase_date",
        }
        columns = ", ".join(c if exact else shown.get(c, c) for c in CUSTOMER_COLUMNS)
        order = [
            f"{s['colId']} {'DESC' if s.get('sort') == 'desc' else 'ASC'}"
            for s in sort_model or []
            if s.get("colId") in CUSTOMER_COLUMNS
        ]
        return f"SELECT {columns} FROM segments WHERE {where} ORDER BY {', '.join([*order, 'customer_id'])}"


def bin_edges(low: float, high: float, low_positive: float | None, bins: int) -> np.ndarray:
    """``bins`` equal-width edges over [low, high]; log-spaced from ``low_positive`` when given."""
    low, high = float(low), float(high)
    if low_positive is not None:
        low_positive = float(low_positive)
        return np.geomspace(low_positive, max(high, low_positive * 1.000001), bins + 1)
    return np.linspace(low, high if high > low else low + 1, bins + 1)


# The customer table's column filters (one home: app/views.py builds the grid from it): the kind
# of AG Grid filter each column takes, and what each kind accepts. A column not listed has no filter.
GRID_FILTERS = {
    **dict.fromkeys(["customer_id", "country", "cluster_label", "rfm_segment", "rfm_score"], "text"),
    **dict.fromkeys(["first_purchase_date", "last_purchase_date"], "text"),
    **dict.fromkeys(
        ["recency_days", "frequency", "monetary", "r_score", "f_score", "m_score", "cluster", "tenure_days"], "number"
    ),
    **dict.fromkeys(CLV_COLUMNS.values(), "number"),
}
_BLANKS = {"blank": "{c} IS NULL", "notBlank": "{c} IS NOT NULL"}
_TYPES = {
    "text": {"equals", "notEqual", "contains", "notContains", "startsWith", "endsWith", *_BLANKS},
    "number": {"equals", "notEqual", "lessThan", "lessThanOrEqual", "greaterThan", "greaterThanOrEqual", "inRange"}
    | set(_BLANKS),
}


@dataclass(frozen=True)
class FilterLimits:
    """How much a grid filter model may ask for (``dashboard.filter_*`` in conf)."""

    max_conditions: int = 2  # per column (AG Grid's own default)
    max_chars: int = 200  # per text value


def grid_filter_sql(filter_model: Any, limits: FilterLimits = FilterLimits()) -> tuple[str, list[Any]]:
    """AG Grid's filter model (text/number filters, conditions joined by AND/OR) as a SQL condition.

    Checked before any SQL is built: a known column, the filter kind of that column, a known
    condition type for that kind, a typed value (a finite number for number filters, a string of
    at most ``limits.max_chars`` for text ones), at most ``limits.max_conditions`` conditions per
    column. Anything else is ``InvalidInput`` (HTTP 400); values are bound as parameters."""
    if not isinstance(filter_model, dict):
        raise InvalidInput("the grid's filter model must be an object")
    clauses, params = ["TRUE"], []
    for column, model in filter_model.items():
        kind = GRID_FILTERS.get(column)
        if kind is None:
            raise InvalidInput(f"no filter on column {str(column)[:40]!r}")
        if not isinstance(model, dict):
            raise InvalidInput(f"the filter on {column} must be an object")
        conditions = model.get("conditions") if "conditions" in model else [model]
        if not isinstance(conditions, list) or not conditions:
            raise InvalidInput(f"the filter on {column} needs a list of conditions")
        if len(conditions) > limits.max_conditions:
            raise InvalidInput(f"at most {limits.max_conditions} conditions per column, {len(conditions)} on {column}")
        operator = model.get("operator", "AND")
        if operator not in ("AND", "OR"):
            raise InvalidInput(f"the filter on {column} joins its conditions with AND or OR")
        parts = []
        for condition in conditions:
            part, values = _condition_sql(column, kind, condition, limits)
            parts.append(part)
            params += values
        clauses.append(f"({f' {operator} '.join(parts)})")
    return " AND ".join(clauses), params


def _value(column: str, kind: str, value: Any, limits: FilterLimits) -> Any:
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidInput(f"the filter on {column} takes a number, not {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise InvalidInput(f"the filter on {column} takes text, not {type(value).__name__}")
    if len(value) > limits.max_chars:
        raise InvalidInput(f"the filter on {column} is {len(value)} characters long: at most {limits.max_chars}")
    return value


def _condition_sql(column: str, kind: str, condition: Any, limits: FilterLimits) -> tuple[str, list[Any]]:
    if not isinstance(condition, dict):
        raise InvalidInput(f"a condition on {column} must be an object")
    condition_type = condition.get("type")
    if condition_type not in _TYPES[kind] or condition.get("filterType", kind) != kind:
        raise InvalidInput(f"{kind} filter on {column}: no condition {str(condition_type)[:40]!r}")
    if condition_type in _BLANKS:
        return _BLANKS[condition_type].format(c=column), []
    if condition_type == "inRange":
        low, high = (_value(column, kind, condition.get(key), limits) for key in ("filter", "filterTo"))
        return f"{column} BETWEEN ? AND ?", [low, high]
    # text filters compare the column's text (dates included), so no value can meet a type it cannot cast to
    target = f"CAST({column} AS VARCHAR)" if kind == "text" else column
    return _COMPARISONS[condition_type].format(c=target), [_value(column, kind, condition.get("filter"), limits)]
