"""Served pages render landed values as text (issue 27, item 6): the EDA report quotes landed
product descriptions and country names in its tables; they must reach the page escaped."""

from __future__ import annotations

import html
from datetime import date

import pandas as pd

from jobs.steps.eda import Section, render_html

PAYLOAD = "<img src=x onerror=alert(document.domain)>"


def test_the_eda_report_escapes_landed_values() -> None:
    table = pd.DataFrame({"stock_code": ["85123A", "X<1>"], "description": [PAYLOAD, "A & B"], "revenue": [1.0, 2.0]})
    page = render_html(
        date(2011, 12, 9), "run<1>", {"top <product>": PAYLOAD}, [Section("Top <b>products</b>", "top.png", table)]
    )
    assert "<img src=x" not in page and "<b>products" not in page and "run<1>" not in page
    assert page.count(html.escape(PAYLOAD, quote=False)) == 2  # the table cell and the figure, as text
    assert "A &amp; B" in page and "X&lt;1&gt;" in page
