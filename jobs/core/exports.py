"""Segment exports as a marketer reads them in a spreadsheet (pure: pandas in, pandas out).

CSV columns are rounded with their unit in the name where it is a currency (``monetary_gbp``),
flags are ``yes``/``no``, rows are sorted by value (best customers first), and every column has
an entry in the manifest's column dictionary. Campaign lists (win-back, VIP care) are the
customers matching a rule from ``conf/pipeline.yaml`` (``exports.campaigns``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

MONEY_COLUMNS = (
    "monetary",
    "clv_12m",
    "clv_12m_p10",
    "clv_12m_p90",
    "expected_spend_90d",
)  # amounts in the shop's currency: 2 decimals, currency in the name
DECIMALS = {
    "p_alive": 3,
    "p_purchase_90d": 3,
    "p_purchase_90d_calibrated": 3,
    "expected_purchases_90d": 2,
}  # other rounded columns
OTHER_FLOAT_DECIMALS = 3  # a float column not named above
VALUE_ORDER = ("clv_12m", "monetary")  # rows by the first of these the list has, highest first
YES, NO = "yes", "no"

# column -> (unit, meaning); "{currency}" is replaced by the configured currency.
MEANINGS: dict[str, tuple[str, str]] = {
    "customer_id": ("", "the customer's id in the shop's system"),
    "country": ("", "the customer's country (of the latest purchase)"),
    "recency_days": ("days", "days since the customer's last purchase, on the snapshot date"),
    "frequency": ("orders", "distinct orders (invoices) in the customer's history"),
    "monetary": ("{currency}", "total spent over the customer's history (returns deducted)"),
    "r_score": ("1-5", "recency quintile score, 5 = most recent"),
    "f_score": ("1-5", "frequency quintile score, 5 = most orders"),
    "m_score": ("1-5", "monetary quintile score, 5 = highest spending"),
    "rfm_score": ("", "R, F and M scores as three digits (e.g. 555)"),
    "cluster_label": ("", "the model's segment: VIP, Loyal, At-Risk, Low-Value (Unprofiled: far from every profile)"),
    "rfm_segment": ("", "the classic named RFM segment (Champions, At Risk, ...)"),
    "snapshot_date": ("date", "the night the values were computed for (YYYY-MM-DD)"),
    "p_alive": ("probability 0-1", "probability the customer is still active (BG/NBD)"),
    "p_purchase_90d": ("probability 0-1", "the model's probability of at least one purchase in the next 90 days"),
    "p_purchase_90d_calibrated": (
        "probability 0-1",
        "the same, calibrated on who actually bought in past 90-day windows (use this one)",
    ),
    "expected_purchases_90d": ("purchase days", "expected number of purchase days in the next 90 days"),
    "expected_spend_90d": ("{currency}", "expected spend in the next 90 days, not discounted"),
    "clv_12m": ("{currency}", "predicted value of the next 12 months, discounted (Gamma-Gamma)"),
    "clv_12m_p10": ("{currency}", "a low case of clv_12m: 9 customers in 10 are predicted to bring at least this"),
    "clv_12m_p90": ("{currency}", "a high case of clv_12m: 1 customer in 10 is predicted to bring more"),
    "at_risk_value": (
        "yes/no",
        "yes: spent more than most, unlikely to buy in the next 90 days (calibrated), no recent purchase",
    ),
}


def csv_name(column: str, currency: str) -> str:
    """The CSV name of a gold column: money columns carry the currency (``monetary_gbp``)."""
    return f"{column}_{currency.lower()}" if column in MONEY_COLUMNS else column


def by_value(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` best customers first: by the first ``VALUE_ORDER`` column present, then customer id."""
    value = next((column for column in VALUE_ORDER if column in rows.columns), None)
    if value is None:
        return rows.sort_values("customer_id").reset_index(drop=True)
    ordered = rows.sort_values("customer_id").sort_values(value, ascending=False, kind="stable", na_position="last")
    return ordered.reset_index(drop=True)


def for_spreadsheet(rows: pd.DataFrame, currency: str) -> pd.DataFrame:
    """``rows`` as the CSV shows them: money to 2 decimals, probabilities to 3, flags yes/no, dates
    ISO, money columns renamed with the currency. The row order is kept."""
    shown = rows.copy()
    for column in shown.columns:
        values = shown[column]
        if pd.api.types.is_bool_dtype(values) or column in flag_columns():
            shown[column] = values.map({True: YES, False: NO})
        elif column in MONEY_COLUMNS:
            shown[column] = values.astype(float).round(2)
        elif column in DECIMALS:
            shown[column] = values.astype(float).round(DECIMALS[column])
        elif pd.api.types.is_float_dtype(values):
            shown[column] = values.round(OTHER_FLOAT_DECIMALS)
    return shown.rename(columns={column: csv_name(column, currency) for column in shown.columns})


def flag_columns() -> tuple[str, ...]:
    """Columns documented as yes/no."""
    return tuple(column for column, (unit, _) in MEANINGS.items() if unit == "yes/no")


def column_dictionary(columns: Iterable[str], currency: str) -> list[dict[str, str]]:
    """One entry per exported column: its CSV name, the gold column, unit and meaning."""
    entries = []
    for column in columns:
        unit, meaning = MEANINGS.get(column, ("", f"gold column {column} (docs/tables.md)"))
        entries.append(
            {
                "csv_column": csv_name(column, currency),
                "parquet_column": column,
                "unit": unit.format(currency=currency),
                "meaning": meaning,
            }
        )
    return entries


def campaign_lists(gold: pd.DataFrame, campaigns: Mapping[str, Mapping[str, list]]) -> dict[str, pd.DataFrame]:
    """Campaign name -> its customers (best first): a customer is in when any column of the rule
    holds one of its values; a rule column the snapshot lacks matches no one."""
    lists = {}
    for name, rule in campaigns.items():
        chosen = pd.Series(False, index=gold.index)
        for column, values in rule.items():
            if column in gold.columns:
                chosen |= gold[column].isin(list(values))
        lists[name] = by_value(gold[chosen])
    return lists
