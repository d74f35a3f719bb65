"""Helpers shared by test modules (test modules never import each other)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal

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
