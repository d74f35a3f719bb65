"""Synthetic transactions in the UCI Online Retail format, landed day by day.

``generate_transactions`` draws a deterministic, realistic history: a catalogue of ~300
products, repeat, one-off and wholesale customers who start and churn at different dates,
guest invoices without a customer id, cancellations, postage and manual lines, the odd
free line and exact duplicate, and no trading on Saturdays nor on 25-26 December.

    python -m harness.generate --customers 1500 --days 180 --seed 7 --end-date 2011-12-09
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from datetime import date, timedelta

import numpy as np
import pandas as pd

from jobs import storage
from jobs.config import load_settings
from jobs.ops.split import land_days

COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
II_NAMES = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID"}

COUNTRY_WEIGHTS = {
    "United Kingdom": 0.85,
    "Germany": 0.03,
    "France": 0.027,
    "EIRE": 0.02,
    "Spain": 0.01,
    "Netherlands": 0.009,
    "Belgium": 0.008,
    "Switzerland": 0.007,
    "Portugal": 0.006,
    "Australia": 0.005,
    "Norway": 0.005,
    "Italy": 0.004,
    "Channel Islands": 0.004,
    "Finland": 0.004,
    "Sweden": 0.004,
    "Denmark": 0.003,
    "Japan": 0.002,
    "Poland": 0.002,
}
COUNTRIES = np.array(list(COUNTRY_WEIGHTS))
UK = 0

COLOURS = ["WHITE", "RED", "PINK", "BLUE", "GREEN", "IVORY", "BLACK", "CREAM", "SILVER", "GOLD", "PURPLE", "ORANGE"]
MOTIFS = [
    "HANGING HEART",
    "RETROSPOT",
    "VINTAGE",
    "REGENCY",
    "SPOTTY",
    "PAISLEY",
    "FLORAL",
    "BIRD",
    "STAR",
    "UNION FLAG",
    "POLKADOT",
    "DOILY",
    "SKULL",
    "CHRISTMAS",
    "STRAWBERRY",
]
ITEMS = [
    "T-LIGHT HOLDER",
    "LANTERN",
    "COAT HANGER",
    "HOT WATER BOTTLE",
    "LUNCH BAG",
    "JUMBO BAG",
    "TEACUP AND SAUCER",
    "CAKE STAND",
    "MUG",
    "PAPER NAPKINS",
    "BUNTING",
    "CUSHION COVER",
    "DOORMAT",
    "ALARM CLOCK",
    "PHOTO FRAME",
    "CANDLE",
    "TEA TOWEL",
    "NOTEBOOK",
    "GIFT WRAP",
    "BAKING SET",
    "STORAGE TIN",
    "WATER BOTTLE",
    "PURSE",
    "CHALKBOARD",
    "BIRTHDAY CARD",
    "PARTY CUPS",
    "BOWL",
    "GARLAND",
    "DRAWER KNOB",
    "WALL CLOCK",
]
CATALOGUE_SIZE = 300
POSTAGE, MANUAL = CATALOGUE_SIZE, CATALOGUE_SIZE + 1  # catalogue rows after the products
PACK_SIZES, PACK_WEIGHTS = [1, 2, 3, 4, 6, 12, 24], [0.3, 0.15, 0.1, 0.15, 0.15, 0.1, 0.05]

FIRST_CUSTOMER_ID = 12346
FIRST_INVOICE_NO = 536365
ONE_OFF, REPEAT, WHOLESALE = 0, 1, 2
KIND_WEIGHTS = [0.25, 0.74, 0.01]
EXISTING_SHARE = 0.6  # customers already active on the window's first day
CHURN_SHARE = 0.3  # repeat buyers whose last purchase falls inside the window
REPEAT_RATE = 1 / 25  # mean invoices per trading day of a repeat buyer
WHOLESALE_RATE = 0.35
GUEST_RATIO = 0.3  # guest lines per customer line, before the cap below
GUEST_CAP = 0.8  # guest lines of a day never exceed this times its customer lines
GUEST_LINES, GUEST_SIGMA = 15, 0.8  # lognormal median and spread of a guest invoice's lines
POSTAGE_SHARE = 0.6  # of foreign invoices
POSTAGE_CENTS = 1800
MANUAL_SHARE = 0.004  # of customer invoices
CANCEL_SHARE = 0.022  # of customer invoices
FREE_LINE_SHARE = 0.0005
DUPLICATE_SHARE = 0.001
OPEN_MINUTE, CLOSE_MINUTE = 7 * 60, 20 * 60 - 1


def generate_transactions(customers: int, days: int, seed: int, end_date: date) -> pd.DataFrame:
    """Rows of the ``days`` calendar days ending at ``end_date``, as text, sorted by time then invoice."""
    trading = trading_days(end_date - timedelta(days=days - 1), end_date)
    if customers < 1 or trading.size == 0:
        return pd.DataFrame({column: pd.Series(dtype=str) for column in COLUMNS})
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(rng)
    invoices = _invoices(rng, _customers(rng, customers, trading.size), trading.size)
    lines = _lines(rng, invoices, catalogue)
    invoices, lines = _cancellations(rng, invoices, lines, trading.size)
    number = _invoice_numbers(invoices)
    lines = lines.iloc[np.argsort(number[lines["invoice"].to_numpy()], kind="stable")]
    return _as_text(invoices, lines, catalogue, number, trading)


def trading_days(start: date, end: date) -> np.ndarray:
    """Days from ``start`` to ``end`` with trading: not Saturdays, not 25-26 December."""
    calendar = pd.date_range(start, end, freq="D")
    closed = (calendar.day_of_week == 5) | ((calendar.month == 12) & calendar.day.isin([25, 26]))
    return calendar[~closed].to_numpy().astype("datetime64[D]")


def with_naming(frame: pd.DataFrame, naming: str) -> pd.DataFrame:
    """The frame with Online Retail (``retail``) or Online Retail II (``ii``) column names."""
    return frame.rename(columns=II_NAMES) if naming == "ii" else frame


def _catalogue(rng: np.random.Generator) -> pd.DataFrame:
    """Products (code, description, price in cents, pack size, popularity), then POST and M."""
    combos = rng.choice(len(COLOURS) * len(MOTIFS) * len(ITEMS), CATALOGUE_SIZE, replace=False)
    colour, rest = np.divmod(combos, len(MOTIFS) * len(ITEMS))
    motif, item = np.divmod(rest, len(ITEMS))
    numbers = (20000 + rng.choice(70000, CATALOGUE_SIZE, replace=False)).astype(str)
    suffix = np.where(rng.random(CATALOGUE_SIZE) < 0.35, rng.choice(list("ABCDEFG"), CATALOGUE_SIZE), "")
    prices = np.clip(np.rint(rng.lognormal(np.log(2.1), 0.75, CATALOGUE_SIZE) * 20) * 5, 40, 1500)
    products = pd.DataFrame(
        {
            "code": np.char.add(numbers, suffix),
            "description": [
                f"{COLOURS[c]} {MOTIFS[m]} {ITEMS[i]}" for c, m, i in zip(colour, motif, item, strict=False)
            ],
            "cents": prices.astype(np.int64),
            "pack": rng.choice(PACK_SIZES, CATALOGUE_SIZE, p=PACK_WEIGHTS),
            "weight": rng.lognormal(0, 1.0, CATALOGUE_SIZE),
        }
    )
    extras = pd.DataFrame(
        {
            "code": ["POST", "M"],
            "description": ["POSTAGE", "Manual"],
            "cents": [POSTAGE_CENTS, 0],
            "pack": 1,
            "weight": 0.0,
        }
    )
    return pd.concat([products, extras], ignore_index=True)


def _customers(rng: np.random.Generator, count: int, n_days: int) -> pd.DataFrame:
    """Customers: id, country, first/last active trading-day index, invoice count, basket habits."""
    kind = rng.choice(3, count, p=KIND_WEIGHTS)
    first = np.where(rng.random(count) < EXISTING_SHARE, 0, rng.integers(0, n_days, count))
    churned = (kind == REPEAT) & (rng.random(count) < CHURN_SHARE)
    last = np.where(churned, first + (rng.random(count) * (n_days - first)).astype(int), n_days - 1)
    wholesale = kind == WHOLESALE
    rate = np.where(wholesale, WHOLESALE_RATE, rng.gamma(0.8, REPEAT_RATE / 0.8, count))
    return pd.DataFrame(
        {
            "customer": FIRST_CUSTOMER_ID + np.arange(count),
            "country": rng.choice(COUNTRIES.size, count, p=_weights(COUNTRY_WEIGHTS.values())),
            "first": first,
            "last": last,
            "invoices": np.where(kind == ONE_OFF, 1, rng.poisson(rate * (last - first + 1))),
            "lines": rng.lognormal(np.log(12), 0.5, count) * np.where(wholesale, 2.0, 1.0),
            "scale": rng.lognormal(0, 0.6, count) * np.where(wholesale, 6.0, 1.0),
        }
    )


def _invoices(rng: np.random.Generator, people: pd.DataFrame, n_days: int) -> pd.DataFrame:
    """Purchase invoices of customers and guests: day, time, owner, country, line count, extras."""
    owned = people.loc[people.index.repeat(people["invoices"])].reset_index(drop=True)
    span = owned["last"] - owned["first"] + 1
    bought = pd.DataFrame(
        {
            "day": owned["first"] + (rng.random(len(owned)) * span).astype(int),
            "customer": owned["customer"],
            "country": owned["country"],
            "lines": _count(rng, owned["lines"].to_numpy(), 0.6),
            "scale": owned["scale"],
        }
    )
    bought["manual"] = rng.random(len(bought)) < MANUAL_SHARE
    customer_lines = np.bincount(bought["day"], weights=bought["lines"], minlength=n_days)
    guest_mean_lines = GUEST_LINES * np.exp(GUEST_SIGMA**2 / 2)
    guest_day = np.repeat(np.arange(n_days), rng.poisson(GUEST_RATIO * customer_lines / guest_mean_lines))
    guests = pd.DataFrame(
        {
            "day": guest_day,
            "customer": 0,
            "country": rng.choice(COUNTRIES.size, guest_day.size, p=_weights(COUNTRY_WEIGHTS.values())),
            "lines": _count(rng, np.full(guest_day.size, float(GUEST_LINES)), GUEST_SIGMA),
            "scale": rng.lognormal(0, 0.6, guest_day.size),
            "manual": False,
        }
    )
    invoices = pd.concat([bought, guests], ignore_index=True)
    invoices["postage"] = (invoices["country"] != UK) & (rng.random(len(invoices)) < POSTAGE_SHARE)
    invoices["minute"] = np.clip(rng.normal(12.5 * 60, 140, len(invoices)), OPEN_MINUTE, CLOSE_MINUTE).astype(int)
    invoices["cancels"] = -1
    return _cap_guests(invoices, n_days)


def _cap_guests(invoices: pd.DataFrame, n_days: int) -> pd.DataFrame:
    """Drop a day's later guest invoices once its guest lines would exceed GUEST_CAP x its customer lines."""
    total = invoices["lines"] + invoices["postage"] + invoices["manual"]
    guest = invoices["customer"] == 0
    customer_lines = np.bincount(invoices["day"][~guest], weights=total[~guest], minlength=n_days)
    guest_lines = total.where(guest, 0).groupby(invoices["day"]).cumsum()
    keep = ~guest | (guest_lines <= GUEST_CAP * customer_lines[invoices["day"]])
    return invoices[keep].reset_index(drop=True)


def _lines(rng: np.random.Generator, invoices: pd.DataFrame, catalogue: pd.DataFrame) -> pd.DataFrame:
    """Invoice lines (invoice index, product index, quantity, price in cents): products, postage, manual."""
    invoice = np.repeat(np.arange(len(invoices)), invoices["lines"])
    weights = catalogue["weight"].to_numpy()
    product = rng.choice(len(catalogue), invoice.size, p=weights / weights.sum())
    multiple = np.maximum(1, np.rint(rng.lognormal(0, 0.7, invoice.size) * invoices["scale"].to_numpy()[invoice]))
    cents = catalogue["cents"].to_numpy()[product]
    products = pd.DataFrame(
        {
            "invoice": invoice,
            "product": product,
            "quantity": catalogue["pack"].to_numpy()[product] * multiple.astype(np.int64),
            "cents": np.where(rng.random(invoice.size) < FREE_LINE_SHARE, 0, cents),
        }
    ).drop_duplicates(["invoice", "product"])
    postage = np.flatnonzero(invoices["postage"])
    manual = np.flatnonzero(invoices["manual"])
    extras = pd.DataFrame(
        {
            "invoice": np.concatenate([postage, manual]),
            "product": np.repeat([POSTAGE, MANUAL], [postage.size, manual.size]),
            "quantity": np.concatenate([rng.integers(1, 4, postage.size), np.ones(manual.size, np.int64)]),
            "cents": np.concatenate(
                [
                    np.full(postage.size, POSTAGE_CENTS),
                    np.rint(rng.lognormal(np.log(250), 0.8, manual.size)).astype(np.int64) + 1,
                ]
            ),
        }
    )
    customer_product = products[(invoices["customer"].to_numpy()[products["invoice"]] > 0)]
    duplicates = customer_product[rng.random(len(customer_product)) < DUPLICATE_SHARE]
    return pd.concat([products, extras, duplicates], ignore_index=True)


def _cancellations(
    rng: np.random.Generator, invoices: pd.DataFrame, lines: pd.DataFrame, n_days: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Append cancellation invoices: a customer takes back 1-3 lines of an earlier invoice of theirs."""
    chosen = np.flatnonzero((invoices["customer"] > 0) & (rng.random(len(invoices)) < CANCEL_SHARE))
    source = invoices.iloc[chosen]
    day = np.minimum(source["day"] + rng.geometric(0.5, chosen.size) - 1, n_days - 1)
    later_today = np.minimum(source["minute"] + rng.integers(1, 180, chosen.size), CLOSE_MINUTE)
    any_time = np.clip(rng.normal(12.5 * 60, 140, chosen.size), OPEN_MINUTE, CLOSE_MINUTE).astype(int)
    cancels = source.assign(
        day=day,
        minute=np.where(day == source["day"], later_today, any_time),
        cancels=chosen,
        postage=False,
        manual=False,
    )
    new_index = pd.Series(len(invoices) + np.arange(chosen.size), index=chosen)
    taken = lines[lines["invoice"].isin(chosen)].drop_duplicates(["invoice", "product"])
    taken = taken[taken["product"] < CATALOGUE_SIZE].copy()
    taken["rank"] = pd.Series(rng.random(len(taken)), index=taken.index).groupby(taken["invoice"]).rank()
    wanted = pd.Series(rng.geometric(0.6, chosen.size).clip(max=3), index=chosen)
    taken = taken[taken["rank"] <= wanted[taken["invoice"]].to_numpy()]
    taken = taken.assign(invoice=new_index[taken["invoice"]].to_numpy(), quantity=-taken["quantity"])
    return (
        pd.concat([invoices, cancels], ignore_index=True),
        pd.concat([lines, taken.drop(columns="rank")], ignore_index=True),
    )


def _invoice_numbers(invoices: pd.DataFrame) -> np.ndarray:
    """Six-digit invoice numbers increasing with (day, time); a cancellation follows a same-minute purchase."""
    keys = [np.arange(len(invoices)), invoices["cancels"] >= 0, invoices["minute"], invoices["day"]]
    order = np.lexsort([np.asarray(key) for key in keys])
    if FIRST_INVOICE_NO + len(invoices) > 1_000_000:
        raise ValueError(f"{len(invoices)} invoices do not fit six-digit invoice numbers")
    number = np.empty(len(invoices), np.int64)
    number[order] = FIRST_INVOICE_NO + np.arange(len(invoices))
    return number


def _as_text(
    invoices: pd.DataFrame, lines: pd.DataFrame, catalogue: pd.DataFrame, number: np.ndarray, trading: np.ndarray
) -> pd.DataFrame:
    """The export columns as strings, one row per line."""
    minute = invoices["minute"].to_numpy() * np.timedelta64(60, "s")
    stamp = trading[invoices["day"].to_numpy()].astype("datetime64[s]") + minute
    customer = invoices["customer"].to_numpy()
    invoice_no = np.char.add(np.where(invoices["cancels"] >= 0, "C", ""), number.astype(str))
    invoice, product = lines["invoice"].to_numpy(), lines["product"].to_numpy()
    cents = lines["cents"].to_numpy()
    return pd.DataFrame(
        {
            "InvoiceNo": invoice_no[invoice],
            "StockCode": catalogue["code"].to_numpy()[product],
            "Description": catalogue["description"].to_numpy()[product],
            "Quantity": _formatted(lines["quantity"].to_numpy(), str),
            "InvoiceDate": pd.DatetimeIndex(stamp).strftime("%Y-%m-%d %H:%M:%S").to_numpy()[invoice],
            "UnitPrice": _formatted(cents, lambda c: f"{c // 100}.{c % 100:02d}"),
            "CustomerID": np.where(customer > 0, customer.astype(str), "")[invoice],
            "Country": COUNTRIES[invoices["country"].to_numpy()][invoice],
        },
        dtype=str,
    )


def _formatted(values: np.ndarray, fmt: Callable[[int], str]) -> np.ndarray:
    """``fmt`` applied once per distinct value, broadcast back to every value."""
    distinct, inverse = np.unique(values, return_inverse=True)
    return np.array([fmt(value) for value in distinct.tolist()], dtype=object)[inverse]


def _count(rng: np.random.Generator, median: np.ndarray, sigma: float) -> np.ndarray:
    """Heavy-tailed positive counts around ``median`` (lognormal, rounded up, 1..300)."""
    return np.clip(np.ceil(rng.lognormal(np.log(median), sigma)), 1, 300).astype(np.int64)


def _weights(values: Iterable[float]) -> np.ndarray:
    """Probabilities proportional to ``values``."""
    array = np.fromiter(values, float)
    return array / array.sum()


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options, defaulting to the ``generator`` and ``landing`` settings."""
    settings = load_settings()
    defaults = settings.generator
    parser = argparse.ArgumentParser(description="Generate Online Retail transactions and land them day by day.")
    parser.add_argument("--customers", type=_positive, default=defaults.customers)
    parser.add_argument("--days", type=_positive, default=defaults.days, help="calendar days ending at --end-date")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    end_date = date.fromisoformat(defaults.end_date)
    parser.add_argument("--end-date", type=date.fromisoformat, metavar="YYYY-MM-DD", default=end_date)
    parser.add_argument("--landing-dir", help="a folder or s3://… (default: paths.landing_dir)")
    parser.add_argument("--naming", choices=["retail", "ii"], default="retail", help="Online Retail (II) column names")
    parser.add_argument("--format", choices=["csv", "parquet"], default=settings.landing.format)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate, land every day of the window with its marker, print a one-line summary."""
    args = parse_args(argv)
    frame = generate_transactions(args.customers, args.days, args.seed, args.end_date)
    start = args.end_date - timedelta(days=args.days - 1)
    settings = load_settings()
    marker = settings.landing.marker
    landing_dir = (
        storage.location(args.landing_dir, settings.storage) if args.landing_dir else settings.path("landing_dir")
    )
    written = land_days(with_naming(frame, args.naming), landing_dir, start, args.end_date, marker, args.format)
    customers = frame.loc[frame["CustomerID"] != "", "CustomerID"].nunique()
    window = f"{len(written)} days ({start} .. {args.end_date})"
    print(f"{len(frame)} rows, {window}, {customers} customers -> {landing_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
