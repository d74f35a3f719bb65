"""Daily sales aggregates for the EDA report: SQL over bronze rows, run by Spark and DuckDB alike.

Each query reads a view named ``DAY_ROWS`` (the canonical columns plus ``transaction_date``,
one day or many) and groups by ``transaction_date``, so the ingest step writes one date's
slice and the backfill many, and the report sums slices up to D without reading bronze.
Revenue lines are the lines RFM counts for monetary (``jobs.core.rules``), with or without a
customer id; ``order_invoice`` is the invoice of a purchase line (null on a cancellation).

Summing per-day distinct orders over days gives the distinct orders of the period because an
invoice never spans two dates (a fact of the data, guarded for RFM in ``jobs.core.rfm``).
"""

from __future__ import annotations

from jobs.config import Rfm
from jobs.core.rules import cancellation_sql, non_product_sql, purchase_sql

DAY_ROWS = "day_rows"
# name -> (TABLES key, columns beside transaction_date)
DAILY_TABLES = {
    "sales": "silver_daily_sales",
    "weekday_hour": "silver_daily_orders_by_hour",
    "country": "silver_daily_country",
    "product": "silver_daily_product",
}


def counted_lines_sql(rules: Rfm) -> str:
    """The revenue lines of ``DAY_ROWS`` with ``revenue`` (signed) and ``order_invoice``."""
    source = f"(SELECT DISTINCT * FROM {DAY_ROWS}) AS d" if rules.drop_exact_duplicates else DAY_ROWS
    counted = purchase_sql(rules)
    if rules.net_of_cancellations:
        counted = f"({counted} OR {cancellation_sql(rules)})"
    return (
        "SELECT transaction_date, invoice, stock_code, description, quantity, price, customer_id, country, "
        f"invoice_date, quantity * price AS revenue, CASE WHEN {purchase_sql(rules)} THEN invoice END AS order_invoice "
        f"FROM {source} WHERE NOT coalesce({non_product_sql(rules)}, FALSE) AND coalesce({counted}, FALSE)"
    )


def daily_sql(rules: Rfm, money: str) -> dict[str, str]:
    """One query per daily table (``DAILY_TABLES``); money columns cast to ``money``."""
    counted = f"WITH counted AS ({counted_lines_sql(rules)})"
    return {
        "sales": f"""{counted},
            per_day AS (SELECT transaction_date, sum(revenue) AS revenue, count(DISTINCT order_invoice) AS orders,
                               count(order_invoice) AS purchase_lines,
                               count(*) - count(order_invoice) AS cancellation_lines
                        FROM counted GROUP BY transaction_date),
            all_rows AS (SELECT transaction_date, count(*) AS bronze_rows FROM {DAY_ROWS} GROUP BY transaction_date)
            SELECT a.transaction_date, CAST(a.bronze_rows AS BIGINT) AS bronze_rows,
                   CAST(coalesce(p.revenue, 0) AS {money}) AS revenue,
                   CAST(coalesce(p.orders, 0) AS BIGINT) AS orders,
                   CAST(coalesce(p.purchase_lines, 0) AS BIGINT) AS purchase_lines,
                   CAST(coalesce(p.cancellation_lines, 0) AS BIGINT) AS cancellation_lines
            FROM all_rows a LEFT JOIN per_day p ON a.transaction_date = p.transaction_date""",
        "weekday_hour": f"""{counted},
            orders AS (SELECT transaction_date, order_invoice, min(invoice_date) AS ordered_at
                       FROM counted WHERE order_invoice IS NOT NULL GROUP BY transaction_date, order_invoice)
            SELECT transaction_date, date_trunc('hour', ordered_at) AS hour_start, CAST(count(*) AS BIGINT) AS orders
            FROM orders GROUP BY transaction_date, date_trunc('hour', ordered_at)""",
        "country": f"""{counted}
            SELECT transaction_date, country, CAST(sum(revenue) AS {money}) AS revenue,
                   CAST(count(DISTINCT order_invoice) AS BIGINT) AS orders
            FROM counted GROUP BY transaction_date, country""",
        "product": f"""{counted},
            codes AS (SELECT transaction_date, stock_code, count(DISTINCT order_invoice) AS code_orders
                      FROM counted GROUP BY transaction_date, stock_code)
            SELECT c.transaction_date, c.stock_code, c.description, CAST(sum(c.revenue) AS {money}) AS revenue,
                   CAST(count(*) AS BIGINT) AS lines, CAST(max(k.code_orders) AS BIGINT) AS code_orders
            FROM counted c JOIN codes k
              ON c.transaction_date = k.transaction_date AND c.stock_code IS NOT DISTINCT FROM k.stock_code
            GROUP BY c.transaction_date, c.stock_code, c.description""",
    }
