"""The segment explorer's Dash layout and callbacks; all data comes from ``SegmentLake``.

Filters (snapshot date, label scheme, segment, country) drive seven views: overview, RFM
distributions, clusters, migration, customer value (P(alive), calibrated P(purchase), CLV per segment;
the at-risk-value customers crossed by cluster label and RFM segment), forecast vs actual (the
scorecard of the forecast made 90 nights earlier) and the customer table (paged from the server; a
toggle keeps the at-risk-value win-back list).
"""

from __future__ import annotations

import threading
from datetime import date
from functools import lru_cache
from urllib.parse import parse_qs

import dash_ag_grid as dag
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html, no_update
from plotly.subplots import make_subplots

from app.data import GRID_FILTERS, Filters, InvalidInput, SegmentLake
from jobs.config import Dashboard
from jobs.definitions import GONE_CUSTOMER, LABEL_SCHEMES, NEW_CUSTOMER, RFM_MEASURES

NO_SEGMENTS = "No segments yet — run `make run`"
MEASURE_TITLES = {"recency_days": "Recency (days)", "frequency": "Frequency (invoices)", "monetary": "Monetary"}
VALUE_TITLES = {
    "p_alive": "P(alive)",
    "p_purchase_90d_calibrated": "P(purchase in 90 days), calibrated",
    "clv_12m": "CLV, 12 months (log)",
}
NO_VALUE = "No predicted value for this snapshot — the clv step has not scored it"
AT_RISK_ONLY = "at_risk"
VALUE_FORMATS = {  # AG Grid value formatters (d3-format) for the predicted-value columns; blank when not scored
    "clv_12m": "params.value == null ? '' : d3.format(',.2f')(params.value)",
    "clv_12m_p10": "params.value == null ? '' : d3.format(',.2f')(params.value)",
    "clv_12m_p90": "params.value == null ? '' : d3.format(',.2f')(params.value)",
    "expected_spend_90d": "params.value == null ? '' : d3.format(',.2f')(params.value)",
    "monetary": "params.value == null ? '' : d3.format(',.2f')(params.value)",
    "p_alive": "params.value == null ? '' : d3.format('.3f')(params.value)",
    "p_purchase_90d": "params.value == null ? '' : d3.format('.3f')(params.value)",
    "p_purchase_90d_calibrated": "params.value == null ? '' : d3.format('.3f')(params.value)",
    "expected_purchases_90d": "params.value == null ? '' : d3.format('.2f')(params.value)",
}
SCHEME_OPTIONS = [{"label": "Cluster labels", "value": "cluster"}, {"label": "RFM segments", "value": "rfm"}]
FILTERS = [
    Input("snapshot-date", "value"),
    Input("scheme", "value"),
    Input("segment", "value"),
    Input("country", "value"),
]
GRID_COLUMNS = [  # field, header (filters: app.data.GRID_FILTERS); the value columns first, visible without scrolling
    ("customer_id", "Customer"),
    ("cluster_label", "Cluster label"),
    ("rfm_segment", "RFM segment"),
    ("clv_12m", "CLV 12 m"),
    ("clv_12m_p10", "CLV P10"),
    ("clv_12m_p90", "CLV P90"),
    ("monetary", "Monetary"),
    ("p_purchase_90d_calibrated", "P(purchase 90 d)"),
    ("at_risk_value", "At-risk value"),
    ("recency_days", "Recency (days)"),
    ("frequency", "Orders"),
    ("country", "Country"),
    ("r_score", "R"),
    ("f_score", "F"),
    ("m_score", "M"),
    ("rfm_score", "RFM"),
    ("cluster", "Cluster"),
    ("first_purchase_date", "First purchase"),
    ("last_purchase_date", "Last purchase"),
    ("tenure_days", "Tenure (days)"),
    ("p_alive", "P(alive)"),
    ("expected_purchases_90d", "Purchases 90 d"),
    ("expected_spend_90d", "Spend 90 d"),
    ("p_purchase_90d", "P(purchase 90 d), raw model"),
]
SCORECARD_HEADERS = {  # the scorecard columns shown, and how (format of a number; None: text)
    "label_scheme": ("labels", None),
    "segment": ("segment", None),
    "customers": ("customers", ",.0f"),
    "mean_predicted_purchases": ("predicted purchases / customer", ".3f"),
    "mean_actual_purchases": ("actual purchases / customer", ".3f"),
    "bias": ("bias", "+.3f"),
    "mae": ("MAE", ".3f"),
    "mean_predicted_p": ("mean P(purchase)", ".3f"),
    "share_bought": ("share who bought", ".3f"),
    "predicted_spend": ("predicted spend", ",.2f"),
    "actual_spend": ("actual net spend", ",.2f"),
}
INITIAL_SORT = {"clv_12m": "desc"}  # the table opens on the most valuable customers


def create_app(segment_lake: SegmentLake, config: Dashboard, warm_up: bool = True) -> Dash:
    """The Dash app over ``segment_lake``; the layout is rebuilt on each page load.

    With ``warm_up`` the cache is filled in the background at start and on each refresh tick.
    """
    # The empty-state page has none of the views' components: their callbacks wait for a page that has.
    app = Dash(__name__, title="Segment explorer", suppress_callback_exceptions=True)
    app.layout = lambda: layout(segment_lake, config)
    register_callbacks(app, segment_lake, config, warm_up)
    app.server.register_error_handler(InvalidInput, invalid_input)
    if warm_up:
        threading.Thread(target=segment_lake.warm_up, daemon=True).start()
    return app


# -- layout ------------------------------------------------------------------------------------


def layout(segment_lake: SegmentLake, config: Dashboard) -> html.Div:
    """The page: the empty state without gold tables, else filters and the five views."""
    dates = segment_lake.snapshot_dates()
    if not dates:
        return html.Div([html.H1("Segment explorer"), dcc.Markdown(NO_SEGMENTS, id="empty-state")], className="page")
    return html.Div(
        [
            dcc.Location(id="url"),
            dcc.Interval(id="refresh", interval=config.refresh_seconds * 1000),
            html.H1("Segment explorer"),
            filter_bar(dates),
            html.Div(id="notice", className="notice"),
            dcc.Tabs(
                id="views",
                value="overview",
                children=[
                    dcc.Tab(
                        label="Overview",
                        value="overview",
                        children=[html.Div(id="overview-cards", className="cards"), dcc.Graph(id="sizes-chart")],
                    ),
                    dcc.Tab(
                        label="RFM distributions",
                        value="distributions",
                        children=[
                            dcc.Checklist(
                                id="log-scale",
                                options=[{"label": " log scale for F and M", "value": "log"}],
                                value=["log"],
                            ),
                            dcc.Graph(id="distribution-chart", style={"height": "720px"}),
                        ],
                    ),
                    dcc.Tab(
                        label="Clusters",
                        value="clusters",
                        children=[dcc.Graph(id="cluster-chart", style={"height": "600px"})],
                    ),
                    dcc.Tab(
                        label="Migration",
                        value="migration",
                        children=[
                            html.Label(
                                ["From snapshot ", dcc.Dropdown(id="migration-from", clearable=False)],
                                className="filter",
                            ),
                            dcc.Graph(id="migration-chart"),
                            html.Div(id="migration-table"),
                        ],
                    ),
                    dcc.Tab(
                        label="Customer value",
                        value="value",
                        children=[
                            dcc.Graph(id="value-chart", style={"height": "520px"}),
                            dcc.Graph(id="at-risk-crosstab", style={"height": "420px"}),
                        ],
                    ),
                    dcc.Tab(
                        label="Forecast vs actual",
                        value="scorecard",
                        children=[html.Div(id="scorecard-title"), html.Div(id="scorecard-table")],
                    ),
                    dcc.Tab(
                        label="Customers",
                        value="customers",
                        children=[
                            html.Div(
                                [
                                    html.Span(id="customer-count"),
                                    dcc.Checklist(
                                        id="at-risk-only",
                                        options=[
                                            {"label": " at-risk value only (win-back list)", "value": AT_RISK_ONLY}
                                        ],
                                        value=[],
                                    ),
                                    html.Button("Download CSV", id="download-button"),
                                ],
                                className="table-bar",
                            ),
                            dcc.Download(id="download"),
                            dcc.Store(id="grid-reset"),
                            customer_grid(config.page_size),
                        ],
                    ),
                ],
            ),
        ],
        className="page",
    )


def filter_bar(dates: list[date]) -> html.Div:
    latest = dates[-1].isoformat()
    return html.Div(
        [
            html.Label(
                [
                    "Snapshot",
                    dcc.Dropdown(id="snapshot-date", options=date_options(dates), value=latest, clearable=False),
                ],
                className="filter",
            ),
            html.Label(
                ["Labels", dcc.RadioItems(id="scheme", options=SCHEME_OPTIONS, value="cluster", inline=True)],
                className="filter",
            ),
            html.Label(["Segment", dcc.Dropdown(id="segment", placeholder="All segments")], className="filter"),
            html.Label(["Country", dcc.Dropdown(id="country", placeholder="All countries")], className="filter"),
        ],
        className="filters",
    )


def customer_grid(page_size: int) -> dag.AgGrid:
    """The customer table: AG Grid's infinite row model, each block fetched from the server."""
    column_filters = {"text": "agTextColumnFilter", "number": "agNumberColumnFilter", "none": False}
    return dag.AgGrid(
        id="customer-grid",
        rowModelType="infinite",
        columnDefs=[
            {
                "field": name,
                "headerName": header,
                "filter": column_filters[GRID_FILTERS.get(name, "none")],
                **({"valueFormatter": {"function": VALUE_FORMATS[name]}} if name in VALUE_FORMATS else {}),
                **({"sort": INITIAL_SORT[name]} if name in INITIAL_SORT else {}),
            }
            for name, header in GRID_COLUMNS
        ],
        defaultColDef={"sortable": True, "resizable": True, "floatingFilter": True, "minWidth": 110},
        dashGridOptions={"cacheBlockSize": page_size, "maxBlocksInCache": 20, "rowBuffer": 0},
        style={"height": "560px"},
    )


def date_options(dates: list[date]) -> list[dict]:
    return [{"label": d.isoformat(), "value": d.isoformat()} for d in reversed(dates)]


# -- figures and tables (pure: data in, components out) ----------------------------------------


def segment_colours(segments: list[str]) -> dict[str, str]:
    palette = px.colors.qualitative.Safe + px.colors.qualitative.Pastel
    return {name: palette[i % len(palette)] for i, name in enumerate(segments)}


def translucent(rgb: str, alpha: float = 0.35) -> str:
    """``rgb(r, g, b)`` → ``rgba(r, g, b, alpha)`` (Sankey links take the colour of their source)."""
    return rgb.replace("rgb(", "rgba(").replace(")", f", {alpha})")


def message_figure(text: str) -> go.Figure:
    figure = go.Figure()
    figure.add_annotation(text=text, showarrow=False, font={"size": 16})
    figure.update_layout(xaxis_visible=False, yaxis_visible=False, template="plotly_white")
    return figure


def overview_cards(overview: pd.DataFrame) -> list[html.Div]:
    """One card per segment: customers, shares, mean R/F/M."""
    return [
        html.Div(
            [
                html.H3(row.segment),
                html.P([html.Span(f"{row.customers:,}", className="card-customers"), " customers"]),
                html.P(f"{row.customer_share:.1%} of customers · {row.revenue_share:.1%} of monetary value"),
                html.P(
                    f"mean R {row.mean_recency_days:,.0f} d · F {row.mean_frequency:,.1f} · M {row.mean_monetary:,.0f}"
                ),
            ],
            className="card",
            **{"data-segment": row.segment},
        )
        for row in overview.itertuples()
    ]


def sizes_figure(sizes: pd.DataFrame, colours: dict[str, str]) -> go.Figure:
    figure = go.Figure()
    for segment, rows in sizes.groupby("segment", sort=False):
        figure.add_scatter(
            x=[d.isoformat() for d in rows["snapshot_date"]],
            y=rows["customers"],
            name=segment,
            mode="lines+markers",
            line_color=colours.get(segment),
        )
    figure.update_layout(
        title="Segment sizes over the snapshots",
        yaxis_title="customers",
        yaxis_rangemode="tozero",  # counts from zero: one customer more is not a cliff
        template="plotly_white",
        xaxis_type="category",
    )
    return figure


@lru_cache(maxsize=2)
def distribution_layout(log: bool) -> dict:
    """The 2×3 grid (histograms over box plots, one column per measure), built once per axis type."""
    grid = make_subplots(
        rows=2, cols=3, subplot_titles=[MEASURE_TITLES[m] for m in RFM_MEASURES] * 2, vertical_spacing=0.12
    )
    grid.update_layout(
        template="plotly_white", title="R, F and M per segment (box whiskers: min–max)", yaxis_title="customers"
    )
    if log:
        grid.update_xaxes(type="log", col=2, row=1).update_xaxes(type="log", col=3, row=1)
        grid.update_yaxes(type="log", col=2, row=2).update_yaxes(type="log", col=3, row=2)
    return grid.to_plotly_json()["layout"]


def distribution_figure(histograms: pd.DataFrame, boxes: pd.DataFrame, colours: dict[str, str], log: bool) -> dict:
    """Histograms (top, step lines on shared bins) and box plots (bottom) per measure and segment.

    Built as plain trace dicts on a cached grid: plotly's per-trace validation cost more than the query.
    """
    traces = []
    hist = dict(tuple(histograms.groupby(["measure", "segment"]))) if not histograms.empty else {}
    stats = boxes.set_index(["measure", "segment"]) if not boxes.empty else None
    for col, measure in enumerate(RFM_MEASURES, start=1):
        top, bottom = ("", str(col + 3)) if col == 1 else (str(col), str(col + 3))
        for segment, colour in colours.items():
            bins = hist.get((measure, segment))
            if bins is not None:
                traces.append(
                    {
                        "type": "scatter",
                        "x": [*bins["bin_start"], bins["bin_end"].iloc[-1]],
                        "y": [*bins["customers"], 0],
                        "line": {"shape": "hv", "color": colour},
                        "name": segment,
                        "legendgroup": segment,
                        "showlegend": col == 1,
                        "xaxis": f"x{top}",
                        "yaxis": f"y{top}",
                    }
                )
            if stats is not None and (measure, segment) in stats.index:
                s = stats.loc[(measure, segment)]
                traces.append(
                    {
                        "type": "box",
                        "x": [segment],
                        "q1": [s["q1"]],
                        "median": [s["median"]],
                        "q3": [s["q3"]],
                        "lowerfence": [s["min"]],
                        "upperfence": [s["max"]],
                        "name": segment,
                        "legendgroup": segment,
                        "showlegend": False,
                        "marker": {"color": colour},
                        "xaxis": f"x{bottom}",
                        "yaxis": f"y{bottom}",
                    }
                )
    return {"data": traces, "layout": distribution_layout(log)}


def value_figure(stats: pd.DataFrame, at_risk: pd.DataFrame, colours: dict[str, str]) -> go.Figure:
    """Box plots (whiskers min–max, mean marked) of P(alive), P(purchase in 90 days) and 12-month CLV per
    segment; the title counts the at-risk-value customers."""
    if stats.empty:
        return message_figure(NO_VALUE)
    figure = make_subplots(rows=1, cols=len(VALUE_TITLES), subplot_titles=list(VALUE_TITLES.values()))
    rows = stats.set_index(["measure", "segment"])
    for col, measure in enumerate(VALUE_TITLES, start=1):
        for segment, colour in colours.items():
            if (measure, segment) not in rows.index:
                continue
            s = rows.loc[(measure, segment)]
            figure.add_box(
                x=[segment],
                q1=[s["q1"]],
                median=[s["median"]],
                q3=[s["q3"]],
                lowerfence=[s["min"]],
                upperfence=[s["max"]],
                mean=[s["mean"]],
                name=segment,
                legendgroup=segment,
                marker_color=colour,
                showlegend=col == 1,
                row=1,
                col=col,
            )
    for col in range(1, len(VALUE_TITLES)):  # probabilities on their whole scale: 0.9999999 reads as 1
        figure.update_yaxes(range=[0, 1.05], row=1, col=col)
    figure.update_yaxes(type="log", row=1, col=len(VALUE_TITLES))
    for col, measure in enumerate(VALUE_TITLES, start=1):  # a constant measure says so instead of a flat line
        if measure in rows.index.get_level_values(0):
            spread = rows.loc[measure]
            if (spread["max"] - spread["min"]).max() < 1e-6 and spread["max"].max() - spread["min"].min() < 1e-6:
                figure.add_annotation(
                    text=f"{spread['max'].max():.3f} for every customer:<br>constant on this snapshot",
                    xref=f"x{'' if col == 1 else col} domain",
                    yref=f"y{'' if col == 1 else col} domain",
                    x=0.5,
                    y=0.5,
                    showarrow=False,
                    bgcolor="rgba(255,255,255,0.8)",
                )
    flagged = int(at_risk["customers"].sum()) if not at_risk.empty else 0
    figure.update_layout(
        template="plotly_white",
        title=f"Predicted customer value per segment — {flagged:,} "
        "at-risk-value customers (win-back list: Customers tab)",
    )
    return figure


def at_risk_figure(crossed: pd.DataFrame) -> go.Figure:
    """Heatmap of the at-risk-value customers: cluster labels (rows) x RFM segments (columns)."""
    if crossed.empty:
        return message_figure("No at-risk-value customer on this snapshot")
    figure = go.Figure(
        go.Heatmap(
            z=crossed.to_numpy(),
            x=list(crossed.columns),
            y=list(crossed.index),
            text=crossed.to_numpy(),
            texttemplate="%{text:,}",
            colorscale="Reds",
            hovertemplate="%{y} · %{x}: %{z:,} at-risk-value customers<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"At-risk value ({int(crossed.to_numpy().sum()):,} customers) by cluster label and RFM segment",
        template="plotly_white",
        yaxis_autorange="reversed",
    )
    return figure


def scorecard_table(table: pd.DataFrame) -> html.Table:
    """The scorecard rows as a table (numbers formatted; the overall row first)."""

    def cell(value: object, fmt: str | None) -> str:
        if fmt is None:
            return str(value)
        return "–" if value is None or pd.isna(value) else format(float(value), fmt)

    header = html.Tr([html.Th(title) for title, _ in SCORECARD_HEADERS.values()])
    rows = [
        html.Tr([html.Td(cell(row[column], fmt)) for column, (_, fmt) in SCORECARD_HEADERS.items()])
        for row in table.to_dict("records")
    ]
    return html.Table([html.Thead(header), html.Tbody(rows)], className="migration-table")


def cluster_figure(points: pd.DataFrame, total: int, colours: dict[str, str], max_points: int) -> go.Figure:
    """Recency vs monetary (log), coloured by segment, marker area by frequency; says when sampled."""
    title = f"Recency vs monetary — {total:,} customers"
    if total > len(points):
        title = f"Recency vs monetary — random sample of {len(points):,} of {total:,} customers (limit {max_points:,})"
    figure = go.Figure()
    size_ref = 2.0 * max(float(points["frequency"].max()), 1.0) / 30**2 if len(points) else 1.0
    by_segment = dict(tuple(points.groupby("segment"))) if len(points) else {}
    for segment in [s for s in colours if s in by_segment]:
        rows = by_segment[segment]
        figure.add_scatter(
            x=rows["recency_days"],
            y=rows["monetary"],
            mode="markers",
            name=segment,
            marker={
                "color": colours[segment],
                "size": rows["frequency"],
                "sizemode": "area",
                "sizeref": size_ref,
                "sizemin": 3,
                "opacity": 0.6,
            },
            customdata=rows[["customer_id", "frequency"]],
            hovertemplate="%{customdata[0]}<br>R %{x} d · F %{customdata[1]} · M %{y:,.2f}",
        )
    figure.update_layout(
        title=title,
        xaxis_title="recency (days)",
        yaxis_title="monetary (log)",
        yaxis_type="log",
        template="plotly_white",
        legend_itemsizing="constant",
    )
    return figure


def migration_figure(flows: pd.DataFrame, earlier: str, later: str, colours: dict[str, str]) -> go.Figure:
    """Sankey: earlier segments (left, incl. ``new``) to later segments (right, incl. ``gone``)."""
    sources = list(dict.fromkeys(flows["source"]))
    targets = list(dict.fromkeys(flows["target"]))
    labels = [f"{s} ({earlier})" if s != NEW_CUSTOMER else f"new since {earlier}" for s in sources]
    labels += [f"{t} ({later})" if t != GONE_CUSTOMER else f"not in {later}" for t in targets]
    figure = go.Figure(
        go.Sankey(
            node={
                "label": labels,
                "color": [colours.get(n, "rgb(187, 187, 187)") for n in sources + targets],
                "pad": 12,
            },
            link={
                "source": [sources.index(s) for s in flows["source"]],
                "target": [len(sources) + targets.index(t) for t in flows["target"]],
                "value": flows["customers"].tolist(),
                "customdata": flows["monetary"].tolist(),
                "color": [translucent(colours.get(s, "rgb(187, 187, 187)")) for s in flows["source"]],
                "hovertemplate": "%{value:,} customers · monetary %{customdata:,.2f}<extra></extra>",
            },
        )
    )
    figure.update_layout(title=f"Customers moving between segments, {earlier} → {later}", template="plotly_white")
    return figure


def migration_table(flows: pd.DataFrame) -> html.Table:
    header = html.Tr([html.Th(h) for h in ("from", "to", "customers", "monetary")])
    rows = [
        html.Tr([html.Td(r.source), html.Td(r.target), html.Td(f"{r.customers:,}"), html.Td(f"{r.monetary:,.2f}")])
        for r in flows.itertuples()
    ]
    return html.Table([html.Thead(header), html.Tbody(rows)], className="migration-table")


# -- callbacks -----------------------------------------------------------------------------------


def parse_day(day: str) -> date:
    """A snapshot date from the page, or ``InvalidInput``."""
    try:
        return date.fromisoformat(day)
    except (TypeError, ValueError) as error:
        raise InvalidInput(f"not a date: {day!r}") from error


def page_bounds(request: dict, page_size: int) -> tuple[int, int]:
    """The grid's requested rows [start, end), refused beyond one page of ``page_size`` rows."""
    try:
        start, end = int(request["startRow"]), int(request["endRow"])
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInput("a row request needs integer startRow and endRow") from error
    if start < 0 or end < start or end - start > page_size:
        raise InvalidInput(f"rows {start}..{end}: at most {page_size} rows per request")
    return start, end


def invalid_input(error: InvalidInput):
    """Flask error handler: a refused request is the client's fault (400), not the server's (500)."""
    return {"error": str(error)}, 400


def register_callbacks(app: Dash, segment_lake: SegmentLake, config: Dashboard, warm_up: bool) -> None:
    """Wire the filters to the views; every callback reads through ``segment_lake``'s cache."""

    def filters_of(day: str | None, scheme: str, segment: str | None, country: str | None) -> Filters | None:
        """The filters, or None when the date has no snapshot; ``InvalidInput`` (400) for a bad request."""
        if scheme not in LABEL_SCHEMES:
            raise InvalidInput(f"unknown label scheme {scheme!r}: one of {', '.join(LABEL_SCHEMES)}")
        if not day or parse_day(day) not in segment_lake.snapshot_dates():
            return None
        return Filters(parse_day(day), scheme, segment or None, country or None)

    def colours(scheme: str, day: date) -> dict[str, str]:
        return segment_colours(segment_lake.segments(scheme, day))

    @app.callback(
        Output("snapshot-date", "options"),
        Output("snapshot-date", "value"),
        Input("url", "search"),
        Input("refresh", "n_intervals"),
        State("snapshot-date", "value"),
    )
    def snapshot_choices(search: str | None, _: int | None, current: str | None):
        """Snapshot dates (new ones appear without a restart); ``?date=`` picks one, even without data."""
        if warm_up:
            threading.Thread(target=segment_lake.warm_up, daemon=True).start()
        options = date_options(segment_lake.snapshot_dates())
        requested = parse_qs((search or "").lstrip("?")).get("date", [None])[0]
        if requested and requested not in [o["value"] for o in options]:
            options.append({"label": f"{requested} (no data)", "value": requested})
        return options, requested or current

    @app.callback(
        Output("segment", "options"),
        Output("segment", "value"),
        Output("country", "options"),
        Input("snapshot-date", "value"),
        Input("scheme", "value"),
        State("segment", "value"),
    )
    def filter_choices(day: str | None, scheme: str, segment: str | None):
        filters = filters_of(day, scheme, None, None)
        if filters is None:
            return [], None, []
        segments = segment_lake.segments(scheme, filters.snapshot_date)
        return segments, segment if segment in segments else None, segment_lake.countries(filters.snapshot_date)

    @app.callback(Output("notice", "children"), Input("snapshot-date", "value"))
    def notice(day: str | None):
        if filters_of(day, "cluster", None, None) is not None:
            return None
        known = ", ".join(d.isoformat() for d in segment_lake.snapshot_dates())
        return f"No snapshot for {day}. Snapshots with data: {known}."

    @app.callback(Output("overview-cards", "children"), Output("sizes-chart", "figure"), *FILTERS)
    def overview(day, scheme, segment, country):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return [], message_figure(f"No data for {day}")
        cards = overview_cards(segment_lake.overview(filters))
        if filters.country:
            country = filters.country
            note = f"Customers in {country} only: shares are within {country}, computed from the customer table."
            cards = [html.P(note, className="caption"), *cards]
        sizes = segment_lake.sizes_over_time(scheme, filters.segment, filters.country)
        return cards, sizes_figure(sizes, colours(scheme, filters.snapshot_date))

    @app.callback(Output("distribution-chart", "figure"), *FILTERS, Input("log-scale", "value"))
    def distributions(day, scheme, segment, country, log):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return message_figure(f"No data for {day}")
        log_scale = "log" in (log or [])
        histograms = segment_lake.histograms(filters, log_scale=log_scale)
        return distribution_figure(
            histograms, segment_lake.box_stats(filters), colours(scheme, filters.snapshot_date), log_scale
        )

    @app.callback(Output("cluster-chart", "figure"), *FILTERS)
    def clusters(day, scheme, segment, country):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return message_figure(f"No data for {day}")
        points, total = segment_lake.scatter_points(filters, config.scatter_max_points)
        return cluster_figure(points, total, colours(scheme, filters.snapshot_date), config.scatter_max_points)

    @app.callback(
        Output("migration-from", "options"),
        Output("migration-from", "value"),
        Input("snapshot-date", "value"),
        State("migration-from", "value"),
    )
    def migration_choices(day: str | None, current: str | None):
        """Earlier snapshots to compare with; the one just before the chosen snapshot by default."""
        earlier = [d for d in segment_lake.snapshot_dates() if day and d.isoformat() < day]
        options = date_options(earlier)
        values = [o["value"] for o in options]
        return options, current if current in values else (values[0] if values else None)

    @app.callback(
        Output("migration-chart", "figure"),
        Output("migration-table", "children"),
        *FILTERS,
        Input("migration-from", "value"),
    )
    def migration(day, scheme, segment, country, earlier):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return message_figure(f"No data for {day}"), None
        if not earlier:
            return message_figure(f"No snapshot before {day} to compare with"), None
        flows = segment_lake.migration(
            scheme, date.fromisoformat(earlier), filters.snapshot_date, filters.segment, filters.country
        )
        figure = migration_figure(flows, earlier, day, colours(scheme, filters.snapshot_date))
        return figure, migration_table(flows)

    @app.callback(Output("value-chart", "figure"), *FILTERS)
    def value(day, scheme, segment, country):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return message_figure(f"No data for {day}")
        return value_figure(
            segment_lake.value_stats(filters),
            segment_lake.at_risk_counts(filters),
            colours(scheme, filters.snapshot_date),
        )

    @app.callback(Output("at-risk-crosstab", "figure"), *FILTERS)
    def at_risk_crosstab(day, scheme, segment, country):
        filters = filters_of(day, scheme, segment, country)
        if filters is None:
            return message_figure(f"No data for {day}")
        return at_risk_figure(segment_lake.at_risk_crosstab(filters))

    @app.callback(Output("scorecard-title", "children"), Output("scorecard-table", "children"), FILTERS[0])
    def forecast_scorecard(day):
        if not day or parse_day(day) not in segment_lake.snapshot_dates():
            return f"No data for {day}", None
        table = segment_lake.forecast_scorecard(parse_day(day))
        if table.empty:
            return f"No forecast to score on {day}: no snapshot with predictions 90 nights earlier", None
        title = (
            f"The forecast of {table['forecast_date'].iloc[0]} against what its customers did through {day}: "
            "purchase days and net spend per customer (bias = predicted - actual)"
        )
        return title, scorecard_table(table)

    app.clientside_callback(
        ClientsideFunction(namespace="segmentExplorer", function_name="purgeGrid"),
        Output("grid-reset", "data"),
        *FILTERS,
        Input("at-risk-only", "value"),
    )

    def table_filters(day, scheme, segment, country, at_risk) -> Filters | None:
        """The dashboard filters plus the customer table's at-risk-value toggle."""
        filters = filters_of(day, scheme, segment, country)
        if filters is None or AT_RISK_ONLY not in (at_risk or []):
            return filters
        return Filters(filters.snapshot_date, filters.scheme, filters.segment, filters.country, at_risk_only=True)

    @app.callback(
        Output("customer-grid", "getRowsResponse"),
        Output("customer-count", "children"),
        Input("customer-grid", "getRowsRequest"),
        *[State(i.component_id, i.component_property) for i in FILTERS],
        State("at-risk-only", "value"),
    )
    def customer_rows(request, day, scheme, segment, country, at_risk):
        """One block of rows for the grid, with the dashboard filters and the grid's sort and filters."""
        filters = table_filters(day, scheme, segment, country, at_risk)
        if request is None:
            return no_update, no_update
        if filters is None:
            return {"rowData": [], "rowCount": 0}, f"No data for {day}"
        start, end = page_bounds(request, config.page_size)
        rows, total = segment_lake.customer_page(
            filters, start, end, request.get("sortModel"), request.get("filterModel")
        )
        shown = "at-risk-value customers" if filters.at_risk_only else "customers"
        return {"rowData": rows, "rowCount": total}, f"{total:,} {shown}"

    @app.callback(
        Output("download", "data"),
        Input("download-button", "n_clicks"),
        *[State(i.component_id, i.component_property) for i in FILTERS],
        State("customer-grid", "getRowsRequest"),
        State("at-risk-only", "value"),
        prevent_initial_call=True,
    )
    def download(_, day, scheme, segment, country, request, at_risk):
        filters = table_filters(day, scheme, segment, country, at_risk)
        if filters is None:
            return no_update
        request = request or {}
        csv = segment_lake.customer_csv(filters, request.get("sortModel"), request.get("filterModel"))
        parts = ["segments", day, scheme, segment or "all-segments", country or "all-countries"]
        name = "_".join([*parts, *(["at-risk-value"] if filters.at_risk_only else [])])
        return dcc.send_bytes(csv, f"{name.replace(' ', '-')}.csv")
