"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import psutil


def random_profile(rng: np.random.Generator, k: int, discrete: bool) -> pd.DataFrame:
    """A cluster profile; ``discrete`` draws from few values so ties and dominated clusters are common."""
    if discrete:
        recency = rng.integers(1, 4, k) * 30.0
        frequency = rng.integers(1, 4, k).astype(float)
        monetary = rng.integers(1, 4, k) * 250.0
    else:
        recency = rng.uniform(1, 365, k)
        frequency = rng.lognormal(1, 1, k)
        monetary = rng.lognormal(6, 1.5, k)
    return pd.DataFrame(
        {
            "cluster": rng.permutation(k),
            "customers": rng.integers(1, 500, k),
            "mean_recency_days": recency,
            "mean_frequency": frequency,
            "mean_monetary": monetary,
        }
    )


def dominates(a: pd.Series, b: pd.Series) -> bool:
    """A is at least as good as B in R (lower recency), F and M, and strictly better in one."""
    at_least = (
        a.mean_recency_days <= b.mean_recency_days
        and a.mean_frequency >= b.mean_frequency
        and a.mean_monetary >= b.mean_monetary
    )
    strictly = (
        a.mean_recency_days < b.mean_recency_days
        or a.mean_frequency > b.mean_frequency
        or a.mean_monetary > b.mean_monetary
    )
    return at_least and strictly


# ---------------------------------------------------------------- typed bronze rows by hand

BRONZE_SCHEMA = (
    "invoice string, stock_code string, description string, quantity int, invoice_date timestamp, "
    "price decimal(18,3), customer_id string, country string, transaction_date date"
)
UK = "United Kingdom"


def line(invoice, stock, quantity, day: date, price, customer, country=UK, description="ITEM", hour=10) -> tuple:
    """One typed bronze row (the transaction date is the invoice's day)."""
    return (
        invoice,
        stock,
        description,
        quantity,
        datetime.combine(day, time(hour)),
        Decimal(price),
        customer,
        country,
        day,
    )


def frame_of(spark, rows: list[tuple]):
    """A Spark frame of typed bronze rows."""
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


# ------------------------------------------------------------------ listeners (issue 27 item 8)
def listening_addresses(pids: list[int]) -> dict[str, set[str]]:
    """``{"<name> (pid)": {"ip:port", ...}}`` of every TCP socket in LISTEN state held by the
    processes ``pids`` and all their descendants (psutil)."""
    found: dict[str, set[str]] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in tree:
            try:
                listening = {
                    f"{c.laddr.ip}:{c.laddr.port}"
                    for c in proc.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                }
                name = f"{proc.name()} ({proc.pid})"
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if listening:
                found.setdefault(name, set()).update(listening)
    return found


@contextmanager
def watching_listeners(pids: list[int], every: float = 2.0) -> Iterator[dict[str, set[str]]]:
    """``listening_addresses(pids)`` sampled every ``every`` seconds for the duration of the block,
    merged: what listened at any time while a night ran, not only at the end."""
    seen: dict[str, set[str]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(every):
            for name, addresses in listening_addresses(pids).items():
                seen.setdefault(name, set()).update(addresses)

    sampler = threading.Thread(target=sample, name="listeners", daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def non_loopback(listeners: dict[str, set[str]]) -> dict[str, set[str]]:
    """The part of ``listening_addresses`` that is not on a loopback address."""

    def loopback(address: str) -> bool:
        ip = ipaddress.ip_address(address.rsplit(":", 1)[0].strip("[]"))
        return (getattr(ip, "ipv4_mapped", None) or ip).is_loopback  # Java listens on ::ffff:127.0.0.1

    return {name: bad for name, addrs in listeners.items() if (bad := {a for a in addrs if not loopback(a)})}


def delta_rs_alone(server, uri: str, version: int | None = None):
    """The Delta table at ``uri`` (``s3://…``) read with nothing but delta-rs and the S3 server's
    address and keys (no project code between them)."""
    import deltalake

    options = {
        "AWS_ENDPOINT_URL": server.endpoint_url,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    return deltalake.DeltaTable(uri, version=version, storage_options=options)


def object_keys(server, root: str, under: str) -> list[str]:
    """The keys under ``<root>/<under>/`` on the S3 server (``root``: ``s3://bucket/prefix``), relative."""
    bucket, _, prefix = root.removeprefix("s3://").partition("/")
    prefix = f"{prefix}/{under}/"
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"].removeprefix(prefix) for page in pages for item in page.get("Contents", [])]


def real_clusters(rows: list[tuple]) -> pd.DataFrame:
    """Cluster profiles of the real snapshot of 2011-12-09 (KMeans, docs/model-lifecycle.md): cluster,
    customers, mean R, F, M and the standardised centroid, given as the log means under a unit scale."""
    columns = ["cluster", "customers", "mean_recency_days", "mean_frequency", "mean_monetary", "zr", "zf", "zm"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.rename(columns={"zr": "mean_log_recency_days", "zf": "mean_log_frequency", "zm": "mean_log_monetary"})


UNIT_SCALE = (np.zeros(3), np.ones(3))
REAL_K4 = real_clusters(
    [
        (0, 1174, 42.94, 1.52, 382.73, -0.37, -0.66, -0.62),
        (1, 1236, 229.67, 1.47, 412.70, 1.32, -0.70, -0.67),
        (2, 1372, 41.81, 4.35, 1589.12, -0.46, 0.42, 0.52),
        (3, 552, 14.60, 16.01, 9076.55, -1.01, 1.92, 1.53),
    ]
)
REAL_K5 = real_clusters(
    [
        (0, 943, 241.95, 1.19, 248.98, 1.38, -0.84, -0.97),
        (1, 1128, 24.34, 4.89, 1735.10, -0.75, 0.56, 0.59),
        (2, 772, 128.14, 2.72, 1102.15, 0.64, -0.13, 0.22),
        (3, 458, 15.16, 17.70, 10362.60, -1.00, 2.07, 1.64),
        (4, 1033, 37.02, 1.51, 349.50, -0.48, -0.67, -0.64),
    ]
)
REAL_K6 = real_clusters(
    [
        (0, 783, 21.07, 2.89, 829.33, -0.80, -0.02, 0.06),
        (1, 283, 11.05, 22.70, 14298.80, -1.11, 2.43, 1.87),
        (2, 763, 126.74, 2.72, 1127.83, 0.63, -0.13, 0.23),
        (3, 838, 25.94, 6.71, 2580.45, -0.73, 0.97, 0.90),
        (4, 907, 249.42, 1.20, 259.66, 1.43, -0.84, -0.90),
        (5, 760, 46.61, 1.22, 257.33, -0.30, -0.82, -0.90),
    ]
)


def generated_rows(spark, settings, path: Path, **generate):
    """Typed transactions of ``harness.generate.generate_transactions(**generate)``, written to ``path``
    as the shop's CSV export and read back through the ingest's parsing (cached)."""
    from harness.generate import generate_transactions
    from jobs.adapters.transactions import parse_transactions, read_export_text, to_canonical_names, typed_rows

    generate_transactions(**generate).to_csv(path, index=False)
    raw = read_export_text(spark, [str(path)])
    return typed_rows(parse_transactions(to_canonical_names(raw, settings), settings)).cache()


def write_rfm_snapshots(settings, rows, nights) -> None:
    """Silver RFM snapshots of ``rows`` for each of ``nights`` (each night's slice replaced)."""
    from jobs.adapters import lake
    from jobs.core.rfm import compute_rfm

    for night in nights:
        lake.replace_slice(
            compute_rfm(rows, night, settings.rfm),
            settings.table_path("silver_customer_rfm"),
            f"snapshot_date = {lake.date_literal(night)}",
            "snapshot_date",
        )
