"""Back-test the value predictors over several origins of a real history, on net revenue.

``python -m harness.backtest_value --source F [--origins 2011-03-10,2011-06-09,2011-09-09] [--holdout-days 91]
[--skip-gbt]``
(``make backtest-value SOURCE=F``)

For each origin: the pipeline's purchase lines (``jobs.core.rfm``) up to the origin only, netted of the
cancellations known at the origin (``jobs.core.clv.net_purchase_days``), are the calibration data; the
holdout is the ``holdout-days`` after the origin, its revenue net of cancellations (purchase days
netted with the lines through the holdout's end, restricted to holdout dates). Nothing dated after the
origin enters a predictor. Predictors of P(>= 1 purchase day in the holdout), the number of purchase
days and the holdout net revenue:

- ``gbt``: Spark ML gradient-boosted trees on the customer state (``jobs.core.value_features``):
  a GBTClassifier for P(purchase), isotonic-calibrated on the newest training origin's predictions, a
  GBTRegressor of log(1 + net revenue) for the value and another of the purchase days;
  training examples from rolling origins whose holdout ends on or before the origin;
- ``bgnbd``: BG/NBD + Gamma-Gamma fitted at the origin (the clv step's model);
- ``bgnbd_cal``: the same with P(purchase) through the clv step's calibration map
  (``jobs.core.calibration.calibration_of``): BG/NBD refitted as of origin - horizon, an isotonic map
  of its P(purchase) to who bought in (origin - horizon, origin]: data before the origin only;
- ``naive``: the repeat rate x / T over the horizon (P = 1 - exp(-rate)), spend = mean day spend;
- ``past_monetary``: the RFM net monetary at the origin (a ranking: AUC and capture only);
- ``oracle``: the holdout itself (upper bound of capture).

Per origin and predictor: AUC and Brier of P(purchase), calibration per decile, MAE of purchase
days, share of the holdout net revenue bought by the top 10 % and top 20 % by predicted value.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.config import Settings, load_settings
from jobs.core.calibration import calibration_of
from jobs.core.clv import customer_summary, expected_spend, fit_params, net_purchase_days, score
from jobs.core.value_features import FEATURES, example_frame, features, training_origins
from jobs.core.value_features import labels as value_labels
from jobs.definitions import CLV_MONTHS

ORIGINS = (date(2011, 3, 10), date(2011, 6, 9), date(2011, 9, 9))
HOLDOUT_DAYS = 91
TOP_SHARES = (0.10, 0.20)
HOME_COUNTRY = "United Kingdom"


def auc(score_: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); nan with a single class."""
    label = label.astype(bool)
    positives, negatives = int(label.sum()), int((~label).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(score_).rank(method="average").to_numpy()
    return float((ranks[label].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def calibration(p: np.ndarray, label: np.ndarray) -> pd.DataFrame:
    """Mean predicted probability and share who bought per decile of the prediction."""
    bins = pd.qcut(pd.Series(p).rank(method="first"), 10, labels=False) + 1
    return (
        pd.DataFrame({"decile": bins, "predicted": p, "bought": label.astype(float)})
        .groupby("decile")
        .agg(mean_predicted=("predicted", "mean"), share_bought=("bought", "mean"))
        .reset_index()
    )


def capture(ranking: np.ndarray, revenue: np.ndarray, share: float) -> float:
    """Share of the holdout revenue bought by the top ``share`` of customers by ``ranking``."""
    top = np.argsort(-ranking, kind="stable")[: max(1, round(share * len(ranking)))]
    total = revenue.sum()
    return float(revenue[top].sum() / total) if total > 0 else float("nan")


def split(lines: tuple[pd.DataFrame, pd.DataFrame], through: date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Purchase and cancellation lines dated up to ``through``."""
    return tuple(frame[pd.to_datetime(frame["purchase_date"]) <= pd.Timestamp(through)] for frame in lines)


def holdout(lines: tuple[pd.DataFrame, pd.DataFrame], origin: date, end: date) -> pd.DataFrame:
    """Per customer: net purchase days and net revenue dated in (origin, end]."""
    days = net_purchase_days(*split(lines, end))
    when = pd.to_datetime(days["purchase_date"])
    window = days[(when > pd.Timestamp(origin)) & (when <= pd.Timestamp(end))]
    return window.groupby("customer_id").agg(purchases=("purchase_date", "size"), revenue=("amount", "sum"))


def past_monetary(lines: tuple[pd.DataFrame, pd.DataFrame]) -> pd.Series:
    """The RFM net monetary (purchases + cancellation lines, floored at 0) of customers with a purchase."""
    purchases, cancellations = lines
    gross = purchases.groupby("customer_id")["amount"].sum()
    cancelled = cancellations.groupby("customer_id")["amount"].sum().reindex(gross.index, fill_value=0.0)
    return (gross + cancelled).clip(lower=0.0)


def predictors(
    lines: tuple[pd.DataFrame, pd.DataFrame], origin: date, horizon: int, settings: Settings
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Per customer known at ``origin``: each predictor's P(purchase), purchase days and value."""
    known = split(lines, origin)
    known_days = net_purchase_days(*known)
    summary = customer_summary(known_days, origin)
    params = fit_params(summary)
    conf = settings.clv
    calibration = calibration_of(
        known_days,
        origin - timedelta(days=horizon),
        origin,
        conf.calibration_min_history_days,
        conf.calibration_min_customers,
    )
    scores = score(
        params, summary, horizon, CLV_MONTHS, settings.clv.monthly_discount_rate, settings.clv.days_per_month
    )
    x, T = summary["frequency"].to_numpy(), summary["T"].to_numpy()
    spend = expected_spend(params, x, summary["monetary_value"].to_numpy())
    naive_rate = np.where(T > 0, x / np.maximum(T, 1) * horizon, 0.0)
    days = net_purchase_days(*known)
    mean_day = days.groupby("customer_id")["amount"].mean().reindex(summary["customer_id"]).to_numpy()
    frame = pd.DataFrame(
        {
            "customer_id": summary["customer_id"].to_numpy(),
            "bgnbd_p": scores["p_purchase"].to_numpy(),
            "bgnbd_n": scores["expected_purchases"].to_numpy(),
            "bgnbd_v": scores["expected_purchases"].to_numpy() * spend,
            "bgnbd_cal_p": calibration.apply(scores["p_purchase"].to_numpy()),
            "bgnbd_cal_n": scores["expected_purchases"].to_numpy(),
            "bgnbd_cal_v": scores["expected_purchases"].to_numpy() * spend,
            "naive_p": 1 - np.exp(-naive_rate),
            "naive_n": naive_rate,
            "naive_v": naive_rate * mean_day,
        }
    ).set_index("customer_id")
    frame["past_monetary_v"] = past_monetary(known).reindex(frame.index, fill_value=0.0)
    frame["past_monetary_p"] = frame["past_monetary_v"]
    return frame, {**params.as_dict(), "calibration": f"{calibration.method}: {calibration.reason}"}


def supervised(
    lines: tuple[pd.DataFrame, pd.DataFrame], countries: pd.Series, origin: date, horizon: int, index: pd.Index
) -> pd.DataFrame:
    """The gbt predictor's columns for the customers of ``index`` (features at ``origin``)."""
    from pyspark.ml.classification import GBTClassifier
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.regression import GBTRegressor, IsotonicRegression
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.getActiveSession()
    first_day = pd.to_datetime(lines[0]["purchase_date"]).min().date()
    examples = []
    for at in training_origins(origin, first_day, horizon, step_days=14, min_history_days=7):
        known = split(lines, at + timedelta(days=horizon))
        label_days = net_purchase_days(*known)
        state_days = net_purchase_days(*split(lines, at))
        rows = features(state_days, known[0], countries, at, horizon)
        examples.append(example_frame(rows, value_labels(label_days, at, horizon), at))
    train = pd.concat(examples)
    newest = train["origin"] == examples[0]["origin"].iloc[0]
    fit_part = train[~newest] if (~newest).any() else train
    assemble = VectorAssembler(inputCols=FEATURES, outputCol="features")

    def frame(rows: pd.DataFrame):
        return assemble.transform(spark.createDataFrame(rows.reset_index(drop=True)))

    classifier = GBTClassifier(labelCol="bought", maxIter=60, maxDepth=4, stepSize=0.1, seed=7).fit(frame(fit_part))
    raw = F.element_at(vector_to_array("probability"), 2)
    held = classifier.transform(frame(train[newest])).withColumn("raw", raw)
    calibrator = IsotonicRegression(featuresCol="raw", labelCol="bought", predictionCol="p").fit(held)
    revenue = GBTRegressor(labelCol="log_revenue", maxIter=60, maxDepth=4, seed=7).fit(frame(train))
    purchases = GBTRegressor(labelCol="purchases", maxIter=60, maxDepth=4, seed=7).fit(frame(train))
    state = features(net_purchase_days(*split(lines, origin)), split(lines, origin)[0], countries, origin, horizon)
    scored = classifier.transform(frame(state.reset_index())).withColumn("raw", raw)
    scored = calibrator.transform(scored).drop("prediction")
    scored = revenue.transform(scored).withColumnRenamed("prediction", "log_value").drop("features")
    scored = purchases.transform(assemble.transform(scored)).withColumnRenamed("prediction", "n")
    out = scored.select("customer_id", "p", "n", "log_value").toPandas().set_index("customer_id")
    out = out.reindex(index)
    return pd.DataFrame(
        {"gbt_p": out["p"].clip(0, 1), "gbt_n": out["n"].clip(lower=0), "gbt_v": np.expm1(out["log_value"])},
        index=index,
    ).fillna(0.0)


def evaluate(frame: pd.DataFrame, actual: pd.DataFrame, names: list[str]) -> dict[str, dict[str, Any]]:
    """The metrics of each predictor in ``frame`` (columns NAME_p, NAME_n, NAME_v) against ``actual``."""
    actual = actual.reindex(frame.index, fill_value=0)
    bought = (actual["purchases"] > 0).to_numpy()
    n, revenue = actual["purchases"].to_numpy(dtype=float), actual["revenue"].to_numpy(dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        p = frame[f"{name}_p"].to_numpy(dtype=float)
        probability = bool(((p >= 0) & (p <= 1)).all())
        row: dict[str, Any] = {"auc": auc(p, bought)}
        if probability:
            deciles = calibration(p, bought)
            row["brier"] = float(((p - bought) ** 2).mean())
            row["max_decile_gap"] = float((deciles["mean_predicted"] - deciles["share_bought"]).abs().max())
            row["deciles"] = deciles.to_dict(orient="records")
        if f"{name}_n" in frame:
            row["mae_purchases"] = float(np.abs(frame[f"{name}_n"].to_numpy(dtype=float) - n).mean())
        for share in TOP_SHARES:
            row[f"top{round(share * 100)}"] = capture(frame[f"{name}_v"].to_numpy(dtype=float), revenue, share)
        out[name] = row
    return out


def backtest(
    lines: tuple[pd.DataFrame, pd.DataFrame],
    countries: pd.Series,
    origin: date,
    horizon: int,
    settings: Settings,
    gbt: bool = True,
) -> dict[str, Any]:
    """Every number of one origin (without the supervised ``gbt`` unless ``gbt``: most of the run time)."""
    end = origin + timedelta(days=horizon)
    frame, params = predictors(lines, origin, horizon, settings)
    if gbt:
        frame = frame.join(supervised(lines, countries, origin, horizon, frame.index))
    actual = holdout(lines, origin, end)
    known = actual.reindex(frame.index, fill_value=0)
    frame["oracle_p"] = (known["purchases"] > 0).astype(float)
    frame["oracle_n"] = known["purchases"].astype(float)
    frame["oracle_v"] = known["revenue"].astype(float)
    names = [*(["gbt"] if gbt else []), "bgnbd", "bgnbd_cal", "naive", "past_monetary", "oracle"]
    return {
        "origin": origin.isoformat(),
        "holdout_end": end.isoformat(),
        "customers": len(frame),
        "share_bought": float((known["purchases"] > 0).mean()),
        "holdout_net_revenue": float(known["revenue"].sum()),
        "params": params,
        "predictors": evaluate(frame, actual, names),
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per origin and predictor (docs/results.md)."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, fmt)

    lines = [
        "| origin | predictor | AUC | Brier | worst decile gap | MAE purchases | top 10 % | top 20 % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for name, row in result["predictors"].items():
            lines.append(
                f"| {result['origin']} | {name} | {cell(row, 'auc', '.3f')} | {cell(row, 'brier', '.3f')} | "
                f"{cell(row, 'max_decile_gap', '.3f')} | {cell(row, 'mae_purchases', '.3f')} | "
                f"{cell(row, 'top10', '.1%')} | {cell(row, 'top20', '.1%')} |"
            )
    return "\n".join(lines)


def extract(settings: Settings, source: Path, through: date) -> tuple[tuple[pd.DataFrame, pd.DataFrame], pd.Series]:
    """Purchase and cancellation lines per customer, stock code and day up to ``through``, and 1 per
    customer whose main country (most purchase lines) is the home market ``eda.home_country``, via Spark."""
    from pyspark.sql import functions as F

    from jobs.adapters.customer_state import purchase_items
    from jobs.adapters.expectations import validation_frame
    from jobs.adapters.spark import get_spark
    from jobs.adapters.transactions import typed_rows
    from jobs.core.rfm import considered_lines, is_cancellation, is_purchase
    from jobs.ops.backfill import read_source

    spark = get_spark(settings)
    transactions = typed_rows(validation_frame(read_source(spark, source), settings)).cache()
    lines = considered_lines(transactions.filter(F.col("transaction_date") <= F.lit(through)), settings.rfm)
    counts = lines.filter(is_purchase(settings.rfm)).groupBy("customer_id", "country").count().toPandas()
    main = counts.sort_values(["customer_id", "count"], ascending=[True, False]).drop_duplicates("customer_id")
    home = (main.set_index("customer_id")["country"] == HOME_COUNTRY).astype(float)
    purchases = purchase_items(transactions, settings, through, is_purchase(settings.rfm))
    return (purchases, purchase_items(transactions, settings, through, is_cancellation(settings.rfm))), home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export file (.csv, .csv.gz, .parquet)")
    parser.add_argument("--origins", default=",".join(o.isoformat() for o in ORIGINS))
    parser.add_argument("--holdout-days", type=int, default=HOLDOUT_DAYS)
    parser.add_argument("--json", type=Path, help="also write every number here")
    parser.add_argument("--lines-cache", type=Path, help="keep the extracted lines here (parquet) and reuse them")
    parser.add_argument("--skip-gbt", action="store_true", help="leave out the supervised gbt (not wired in)")
    args = parser.parse_args(argv)
    origins = [date.fromisoformat(o) for o in args.origins.split(",")]
    settings = load_settings()
    through = max(origins) + timedelta(days=args.holdout_days)
    cache = args.lines_cache
    if cache and (cache / "countries.parquet").exists():
        lines = (pd.read_parquet(cache / "purchases.parquet"), pd.read_parquet(cache / "cancellations.parquet"))
        countries = pd.read_parquet(cache / "countries.parquet")["home"]
        from jobs.adapters.spark import get_spark

        get_spark(settings)
    else:
        lines, countries = extract(settings, args.source, through)
        if cache:
            cache.mkdir(parents=True, exist_ok=True)
            lines[0].to_parquet(cache / "purchases.parquet")
            lines[1].to_parquet(cache / "cancellations.parquet")
            countries.rename("home").to_frame().to_parquet(cache / "countries.parquet")
    results = [
        backtest(lines, countries, origin, args.holdout_days, settings, gbt=not args.skip_gbt) for origin in origins
    ]
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
