"""Back-test the customer-value model on a real history: calibrate, hold out, compare with a naive rule.

``python -m harness.backtest_clv --source F [--calibration-end 2011-09-09] [--holdout-end 2011-12-09]``
(``make backtest-clv SOURCE=F``)

The pipeline's own definitions throughout: purchase lines as ``jobs.core.rfm``, the summary and
closed forms of ``jobs.core.clv``, the fit of the clv step. Per calibration customer: predicted
purchase days in the holdout against the actual ones (correlation, MAE, RMSE), the same for the
naive baseline (repeat rate x / T extrapolated over the holdout), calibration of P(alive) and of
P(>= 1 purchase) by decile (predicted vs share who bought), and the holdout revenue share captured
by the top 10 % by 12-month CLV against the top 10 % by past monetary (the pipeline's RFM monetary).
Everything is logged to one MLflow run and printed as Markdown tables.
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
from jobs.core.clv import ClvParams, customer_summary, fit_params, score
from jobs.definitions import CLV_MONTHS, RUN_DATE_TAG, STEP_TAG

TOP_SHARE = 0.10


def holdout_actuals(days: pd.DataFrame, calibration_end: date, holdout_end: date) -> pd.DataFrame:
    """Per customer: purchase days and revenue in (calibration_end, holdout_end]."""
    when = pd.to_datetime(days["purchase_date"])
    window = days[(when > pd.Timestamp(calibration_end)) & (when <= pd.Timestamp(holdout_end))]
    per_day = window.groupby(["customer_id", "purchase_date"], as_index=False)["amount"].sum()
    return per_day.groupby("customer_id").agg(
        actual_purchases=("purchase_date", "size"), actual_revenue=("amount", "sum")
    )


def naive_purchases(summary: pd.DataFrame, horizon_days: int) -> np.ndarray:
    """Each customer's past repeat rate x / T extrapolated over the horizon (0 when T = 0)."""
    T = summary["T"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(T > 0, summary["frequency"].to_numpy(dtype=float) / T * horizon_days, 0.0)


def accuracy(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Correlation (nan for a constant prediction), MAE, RMSE and totals."""
    error = predicted - actual
    constant = np.ptp(predicted) == 0 or np.ptp(actual) == 0
    return {
        "corr": float("nan") if constant else float(np.corrcoef(predicted, actual)[0, 1]),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "total_predicted": float(predicted.sum()),
        "total_actual": float(actual.sum()),
    }


def by_decile(predicted: pd.Series, bought: pd.Series, resolution: float = 1e-6) -> pd.DataFrame:
    """Mean prediction and share who bought per decile of the prediction; one bin when the predictions
    span less than ``resolution`` (P(alive) on the real data: deciles of rounding noise mean nothing)."""
    if predicted.max() - predicted.min() < resolution:
        bins = pd.Series(1, index=predicted.index)
    else:
        bins = pd.qcut(predicted.rank(method="first"), 10, labels=False) + 1
    distinct = predicted.nunique()
    table = (
        pd.DataFrame({"decile": bins, "predicted": predicted, "bought": bought})
        .groupby("decile")
        .agg(customers=("bought", "size"), mean_predicted=("predicted", "mean"), share_bought=("bought", "mean"))
    )
    return table.assign(distinct_values=distinct).reset_index()


def top_share(ranking: pd.Series, revenue: pd.Series, share: float = TOP_SHARE) -> float:
    """Share of the total holdout revenue bought by the top ``share`` of customers by ``ranking``."""
    top = ranking.sort_values(ascending=False, kind="stable").index[: max(1, round(share * len(ranking)))]
    total = revenue.sum()
    return float(revenue.loc[top].sum() / total) if total > 0 else float("nan")


def backtest(
    days: pd.DataFrame,
    past_monetary: pd.Series,
    calibration_end: date,
    holdout_end: date,
    settings: Settings,
    params: ClvParams | None = None,
) -> dict[str, Any]:
    """All the back-test's numbers. ``days``: purchase days (customer_id, purchase_date, amount) over the
    whole span; ``past_monetary``: the pipeline's RFM monetary as of ``calibration_end`` by customer."""
    summary = customer_summary(days, calibration_end)
    horizon = (holdout_end - calibration_end).days
    params = params or fit_params(summary)
    scores = score(
        params, summary, horizon, CLV_MONTHS, settings.clv.monthly_discount_rate, settings.clv.days_per_month
    ).set_index("customer_id")
    actual = holdout_actuals(days, calibration_end, holdout_end).reindex(scores.index, fill_value=0)
    bought = actual["actual_purchases"] > 0
    naive = pd.Series(naive_purchases(summary, horizon), index=summary["customer_id"]).loc[scores.index]
    revenue = actual["actual_revenue"].astype(float)
    return {
        "params": params.as_dict(),
        "customers": len(summary),
        "repeat_customers": int((summary["frequency"] > 0).sum()),
        "horizon_days": horizon,
        "share_bought_in_holdout": float(bought.mean()),
        "purchases": {
            "model": accuracy(scores["expected_purchases"].to_numpy(), actual["actual_purchases"].to_numpy()),
            "naive": accuracy(naive.to_numpy(), actual["actual_purchases"].to_numpy()),
            "zero": accuracy(np.zeros(len(actual)), actual["actual_purchases"].to_numpy()),
        },
        "p_alive_range": [float(scores["p_alive"].min()), float(scores["p_alive"].max())],
        "calibration_p_alive": by_decile(scores["p_alive"], bought).to_dict(orient="records"),
        "calibration_p_purchase": by_decile(scores["p_purchase"], bought).to_dict(orient="records"),
        "top10_revenue_share": {
            "clv_12m": top_share(scores["clv"], revenue),
            "past_monetary": top_share(past_monetary.reindex(scores.index, fill_value=0).astype(float), revenue),
            "oracle": top_share(revenue, revenue),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    """The back-test as Markdown tables (docs/results.md)."""
    lines = ["| predictor | corr | MAE | RMSE | total predicted | total actual |", "|---|---|---|---|---|---|"]
    for name, row in result["purchases"].items():
        lines.append(
            f"| {name} | {row['corr']:.3f} | {row['mae']:.3f} | {row['rmse']:.3f} | "
            f"{row['total_predicted']:,.0f} | {row['total_actual']:,.0f} |"
        )
    for key, title in (("calibration_p_alive", "P(alive)"), ("calibration_p_purchase", "P(>= 1 purchase)")):
        table = pd.DataFrame(result[key])
        lines += [
            "",
            f"| decile of {title} | " + " | ".join(str(d) for d in table["decile"]) + " |",
            "|---|" + "---|" * len(table),
            "| mean predicted | " + " | ".join(f"{v:.3f}" for v in table["mean_predicted"]) + " |",
            "| share who bought | " + " | ".join(f"{v:.3f}" for v in table["share_bought"]) + " |",
        ]
    lines += ["", "| top 10 % by | share of holdout revenue |", "|---|---|"]
    lines += [f"| {name} | {share:.1%} |" for name, share in result["top10_revenue_share"].items()]
    return "\n".join(lines)


def log_to_mlflow(settings: Settings, result: dict[str, Any], args: dict[str, str]) -> str:
    import mlflow

    from jobs.adapters import tracking

    tracking.client(settings)
    mlflow.set_experiment(experiment_id=tracking.experiment_id(settings))
    with mlflow.start_run(run_name=f"backtest_clv__{args['calibration_end']}") as run:
        mlflow.set_tags({STEP_TAG: "backtest_clv", RUN_DATE_TAG: args["holdout_end"]})
        mlflow.log_params({**args, **{f"clv_{k}": v for k, v in result["params"].items()}})
        metrics = {
            f"{name}_{metric}": value
            for name, row in result["purchases"].items()
            for metric, value in row.items()
            if np.isfinite(value)
        }
        metrics |= {f"top10_share_{name}": value for name, value in result["top10_revenue_share"].items()}
        mlflow.log_metrics(metrics)
        mlflow.log_dict(result, "backtest/result.json")
        mlflow.log_text(markdown(result), "backtest/result.md")
        return run.info.run_id


def extract(
    settings: Settings, source: Path, calibration_end: date, holdout_end: date
) -> tuple[pd.DataFrame, pd.Series]:
    """Purchase days up to ``holdout_end`` and the RFM monetary as of ``calibration_end``, via Spark."""
    from jobs.adapters.customer_state import purchase_days
    from jobs.adapters.expectations import validation_frame
    from jobs.adapters.spark import get_spark
    from jobs.adapters.transactions import typed_rows
    from jobs.core.rfm import compute_rfm
    from jobs.ops.backfill import read_source

    spark = get_spark(settings)
    transactions = typed_rows(validation_frame(read_source(spark, source), settings)).cache()
    days = purchase_days(transactions, settings, holdout_end)
    rfm = compute_rfm(transactions, calibration_end, settings.rfm).select("customer_id", "monetary").toPandas()
    return days, rfm.set_index("customer_id")["monetary"].astype(float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path, help="export file (.csv, .csv.gz, .parquet)")
    parser.add_argument("--calibration-end", type=date.fromisoformat, default=date(2011, 9, 9))
    parser.add_argument("--holdout-end", type=date.fromisoformat, default=date(2011, 12, 9))
    args = parser.parse_args(argv)
    if args.holdout_end <= args.calibration_end + timedelta(days=1):
        parser.error("the holdout must end after the calibration")
    settings = load_settings()
    days, monetary = extract(settings, args.source, args.calibration_end, args.holdout_end)
    result = backtest(days, monetary, args.calibration_end, args.holdout_end, settings)
    run_id = log_to_mlflow(
        settings,
        result,
        {
            "source": str(args.source),
            "calibration_end": str(args.calibration_end),
            "holdout_end": str(args.holdout_end),
        },
    )
    print(markdown(result))
    print(json.dumps({"mlflow_run_id": run_id, "params": result["params"], "customers": result["customers"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
