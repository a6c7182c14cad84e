"""The sample data of the demo and the notebooks, made from a fixed seed.

``sample_data/make_sample_data.py`` writes these tables as CSV files; ``pgq-nb demo`` reads
those files from a source checkout, or makes the same tables in memory when pgq_nb was
installed from a wheel (which has no ``sample_data/``). Same seed, same bytes: every value is
produced as text here, so the files and the in-memory tables cannot drift apart.

Only the standard library is used (``random`` with an int seed gives the same sequence on
every platform and Python version), so importing this module loads nothing heavy.

The tables (``sample_data/README.md`` describes every column):

- ``customers``: 600 customers in 16 countries and 5 regions;
- ``orders``: 5,000 orders placed in October 2026 (UTC), in the customer's currency;
- ``fx_rates``: a daily EUR rate for every currency but one: Swiss franc (CHF) orders have no
  rate, on purpose, so a pipeline has some data to fail on (and to requeue once fixed).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import math
import random
from collections.abc import Sequence
from pathlib import Path

#: The seed of the published sample data.
SEED = 20261001
N_ORDERS = 5_000
N_CUSTOMERS = 600
FIRST_DAY = dt.date(2026, 10, 1)
DAYS = 31
FIRST_ORDER_ID = 100_001

#: country: (region, currency, weight among customers)
COUNTRIES: dict[str, tuple[str, str, int]] = {
    "DE": ("Europe", "EUR", 14),
    "FR": ("Europe", "EUR", 11),
    "NL": ("Europe", "EUR", 6),
    "ES": ("Europe", "EUR", 6),
    "IT": ("Europe", "EUR", 6),
    "CH": ("Europe", "CHF", 1),
    "NO": ("Nordics", "NOK", 6),
    "SE": ("Nordics", "SEK", 7),
    "GB": ("UK & Ireland", "GBP", 10),
    "IE": ("UK & Ireland", "EUR", 3),
    "US": ("North America", "USD", 14),
    "CA": ("North America", "CAD", 5),
    "JP": ("APAC", "JPY", 5),
    "AU": ("APAC", "AUD", 4),
    "SG": ("APAC", "USD", 2),
    "NZ": ("APAC", "AUD", 1),
}
REGIONS = ("Europe", "Nordics", "UK & Ireland", "North America", "APAC")

#: EUR per unit of each currency on the first day; CHF is missing on purpose.
BASE_RATES = {
    "EUR": 1.0,
    "USD": 0.92,
    "GBP": 1.16,
    "SEK": 0.087,
    "NOK": 0.085,
    "JPY": 0.0061,
    "CAD": 0.67,
    "AUD": 0.60,
}
#: currency: digits after the decimal point in amounts
DECIMALS = {"JPY": 0}

STATUSES = (("paid", 92), ("refunded", 5), ("cancelled", 3))
#: relative order volume per UTC hour of the day
HOURLY = (2, 1, 1, 1, 2, 3, 5, 7, 8, 9, 9, 9, 10, 10, 9, 9, 9, 10, 10, 9, 8, 6, 4, 3)

# fmt: off
_FIRST = [
    "Ada", "Alan", "Anna", "Aiko", "Ben", "Carla", "Chen", "Daniel", "Eva", "Farah", "Felix",
    "Grace", "Hana", "Ines", "Ivan", "Jonas", "Kari", "Lars", "Lea", "Liam", "Lucia", "Maja",
    "Marco", "Mei", "Nadia", "Noah", "Olga", "Omar", "Paula", "Pierre", "Priya", "Ravi", "Rosa",
    "Sara", "Sofia", "Tariq", "Tom", "Yuki", "Zoe",
]
_LAST = [
    "Andersen", "Berg", "Brown", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Hansen",
    "Ito", "Jensen", "Kelly", "Khan", "Lee", "Lindqvist", "Martin", "Meyer", "Moreau", "Murphy",
    "Nakamura", "Nilsen", "Novak", "Olsen", "Patel", "Rossi", "Schmidt", "Silva", "Smith",
    "Tanaka", "Walsh", "Weber", "Wilson",
]
# fmt: on


@dataclasses.dataclass(frozen=True)
class Table:
    """One sample table: its columns and its rows, every value already written as text."""

    name: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]

    @property
    def filename(self) -> str:
        return f"{self.name}.csv"

    def to_csv(self) -> str:
        """The CSV text (a header line, ``\\n`` line ends), exactly as the files hold it."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()


def _weighted(rng: random.Random, options: list[str], weights: list[int]) -> str:
    return rng.choices(options, weights=weights, k=1)[0]


def _customers(rng: random.Random, n: int) -> list[tuple[str, ...]]:
    countries = list(COUNTRIES)
    weights = [COUNTRIES[c][2] for c in countries]
    rows: list[tuple[str, ...]] = []
    for i in range(1, n + 1):
        country = _weighted(rng, countries, weights)
        region = COUNTRIES[country][0]
        segment = "business" if rng.random() < 0.2 else "consumer"
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        signup = dt.date(2021, 1, 1) + dt.timedelta(days=rng.randrange(5 * 365 + 180))
        rows.append((f"C{i:05d}", name, country, region, segment, signup.isoformat()))
    return rows


def _rates(rng: random.Random) -> dict[tuple[str, str], float]:
    """(ISO day, currency) -> EUR per unit: a small daily random walk from BASE_RATES."""
    rates: dict[tuple[str, str], float] = {}
    for currency, base in BASE_RATES.items():
        rate = base
        for d in range(DAYS):
            day = (FIRST_DAY + dt.timedelta(days=d)).isoformat()
            if currency != "EUR" and d:
                rate *= math.exp(rng.gauss(0.0, 0.004))
            rates[day, currency] = float(f"{rate:.6g}")
    return rates


def _order_time(rng: random.Random) -> dt.datetime:
    start = dt.datetime.combine(FIRST_DAY, dt.time(), tzinfo=dt.UTC)
    peak = max(HOURLY)
    while True:
        at = start + dt.timedelta(seconds=rng.randrange(DAYS * 86_400))
        if rng.random() * peak < HOURLY[at.hour]:
            return at


def _orders(
    rng: random.Random,
    customers: list[tuple[str, ...]],
    rates: dict[tuple[str, str], float],
    n: int,
) -> list[tuple[str, ...]]:
    # Business customers order more often, and more.
    weights = [4 if c[4] == "business" else 1 for c in customers]
    statuses = [s for s, _ in STATUSES]
    status_weights = [w for _, w in STATUSES]
    drafts = []
    for _ in range(n):
        customer = rng.choices(customers, weights=weights, k=1)[0]
        at = _order_time(rng)
        country, region = customer[2], customer[3]
        currency = COUNTRIES[country][1]
        eur = rng.lognormvariate(math.log(55.0), 0.75) * (2.5 if customer[4] == "business" else 1)
        # CHF has no published rate: price it as if 1 CHF were 1.07 EUR.
        rate = rates.get((at.date().isoformat(), currency), 1.07)
        digits = DECIMALS.get(currency, 2)
        amount = max(round(eur / rate, digits), 1.0)
        status = _weighted(rng, statuses, status_weights)
        drafts.append((at, customer[0], region, f"{amount:.{digits}f}", currency, status))
    drafts.sort(key=lambda row: row[0])
    return [
        (str(FIRST_ORDER_ID + i), cid, region, amount, currency, _utc(at), status)
        for i, (at, cid, region, amount, currency, status) in enumerate(drafts)
    ]


def _utc(at: dt.datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def generate(
    seed: int = SEED, *, orders: int = N_ORDERS, customers: int = N_CUSTOMERS
) -> dict[str, Table]:
    """The three sample tables, by name: ``customers``, ``orders``, ``fx_rates``."""
    rng = random.Random(seed)
    people = _customers(rng, customers)
    rates = _rates(rng)
    sold = _orders(rng, people, rates, orders)
    fx_rows = [(day, cur, f"{rate:.6g}") for (day, cur), rate in sorted(rates.items())]
    return {
        "customers": Table(
            "customers",
            ("customer_id", "name", "country", "region", "segment", "signup_date"),
            people,
        ),
        "orders": Table(
            "orders",
            ("order_id", "customer_id", "region", "amount", "currency", "ordered_at", "status"),
            sold,
        ),
        "fx_rates": Table("fx_rates", ("date", "currency", "eur_per_unit"), fx_rows),
    }


def write(directory: Path, seed: int = SEED) -> list[Path]:
    """Write the tables as CSV files into ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for table in generate(seed).values():
        path = directory / table.filename
        path.write_text(table.to_csv(), encoding="utf-8", newline="")
        paths.append(path)
    return paths


def differences(directory: Path, seed: int = SEED) -> list[str]:
    """The CSV files in ``directory`` that are missing or differ from what ``seed`` makes."""
    changed = []
    for table in generate(seed).values():
        path = directory / table.filename
        if not path.exists() or path.read_text(encoding="utf-8") != table.to_csv():
            changed.append(table.filename)
    return changed
