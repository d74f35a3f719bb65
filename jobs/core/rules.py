"""What counts as a purchase, a cancellation or a non-product line: SQL predicates over the
canonical columns, written once and applied by Spark (``F.expr``) and DuckDB alike."""

from __future__ import annotations

from jobs.config import Rfm


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal (single quotes doubled), for Spark SQL and DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def _starts_with_any(column: str, prefixes: list[str]) -> str:
    tests = [f"substr({column}, 1, {len(prefix)}) = {sql_string(prefix)}" for prefix in prefixes]
    return "(" + " OR ".join(tests) + ")" if tests else "FALSE"


def non_purchase_invoice_sql(rules: Rfm) -> str:
    """The invoice is a cancellation or an adjustment (``rfm.non_purchase_prefixes``)."""
    return _starts_with_any("invoice", rules.non_purchase_prefixes)


def purchase_sql(rules: Rfm) -> str:
    """A purchase line: not a cancellation/adjustment invoice, positive quantity and price."""
    return f"(NOT {non_purchase_invoice_sql(rules)} AND quantity > 0 AND price > 0)"


def cancellation_sql(rules: Rfm) -> str:
    """A cancellation (return) line: a ``C`` invoice taking quantity back."""
    return f"({_starts_with_any('invoice', [rules.cancellation_prefix])} AND quantity < 0)"


def non_product_sql(rules: Rfm) -> str:
    """A charge, not a product: postage, fees, manual lines (``rfm.non_product_stock_codes``)."""
    codes = ", ".join(sql_string(c) for c in rules.non_product_stock_codes)
    return f"stock_code IN ({codes})" if codes else "FALSE"
