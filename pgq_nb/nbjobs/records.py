"""How ``pgq_nb.record(name, value)`` gets a value out of the kernel: no database connection.

In the kernel, ``record`` displays an output of the mimetype :data:`MIMETYPE` holding
``{"name": ..., "value": ...}`` (with a ``text/plain`` line, so a person running the notebook
by hand sees what was recorded). The runner reads these outputs from the executed notebook
(:func:`collect`): the last value recorded under a name wins. Values are JSON; a pandas
DataFrame or Series is recorded as pandas' table JSON (``to_json(orient="table")``: the values
with a schema of their dtypes), which ``q.notebook_runs()`` reads back as a DataFrame. This
module imports neither pandas nor IPython: it recognises frames by their methods.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pgq_nb.errors import InvalidInputError, article
from pgq_nb.nbjobs.limits import RECORD_LIMIT

MIMETYPE = "application/vnd.pgq-nb.record+json"
#: The marker of a recorded DataFrame or Series (``{KIND: "dataframe", "table": {...}}``).
KIND = "pgq_nb:kind"
#: Values longer than this (as JSON) are described, not copied, in the job's result summary.
SUMMARY_LIMIT = 1_000


def _numpy_scalar(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "item")


def encode(name: str, value: Any) -> Any:
    """``value`` as the JSON that is recorded, or a clear error."""
    if not isinstance(name, str) or not name:
        raise InvalidInputError("pgq_nb.record(name, value): name must be a non-empty str")
    kind = type(value).__name__
    if kind in ("DataFrame", "Series") and hasattr(value, "to_json"):
        frame = value.to_frame() if kind == "Series" else value
        try:
            text = frame.to_json(orient="table", date_format="iso")
        except ValueError as exc:
            raise InvalidInputError(
                f"pgq_nb.record({name!r}, ...): this {kind} cannot be written as a table "
                f"({exc}); try value.reset_index() or simpler column names"
            ) from None
        _check_size(name, kind, len(text))
        return {KIND: kind.lower(), "table": json.loads(text)}
    if _numpy_scalar(value):
        value = value.item()
    elif type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN (a mean of nothing) is recorded as missing
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"pgq_nb.record({name!r}, ...) got {article(kind)}, which is not JSON: record "
            "numbers, strings, booleans, None, lists and dicts of them, or a pandas DataFrame "
            "or Series (convert the value first, for example str(value))"
        ) from None
    _check_size(name, kind, size)
    return value


def _check_size(name: str, kind: str, size: int) -> None:
    if size > RECORD_LIMIT:
        raise InvalidInputError(
            f"pgq_nb.record({name!r}, ...) got {article(kind)} of {size:,} characters as JSON; "
            f"a recorded value may be at most {RECORD_LIMIT:,}: record a summary (a count, "
            "df.describe(), df.head(1000)) and keep the data itself in a table or a file"
        )


def bundle(name: str, value: Any) -> dict[str, Any]:
    """The display data ``record`` shows: the record, and a line of text for people."""
    encoded = encode(name, value)
    shown = summary_value(encoded)
    return {
        MIMETYPE: {"name": name, "value": encoded},
        "text/plain": f"recorded {name} = {shown!r}"[:300],
    }


def collect(cells: list[Any]) -> dict[str, Any]:
    """The values recorded in an executed notebook's outputs, by name, in the order first
    recorded (a later record of the same name replaces the value)."""
    found: dict[str, Any] = {}
    for cell in cells:
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if output.get("output_type") not in ("display_data", "execute_result"):
                continue
            data = output.get("data", {}).get(MIMETYPE)
            if isinstance(data, str):  # (an older nbformat may keep JSON as text)
                data = json.loads(data)
            if isinstance(data, dict) and isinstance(data.get("name"), str) and "value" in data:
                found[data["name"]] = data["value"]
    return found


def summary_value(value: Any) -> Any:
    """What the job's result shows of a recorded value: the value when small, else what it is."""
    if isinstance(value, dict) and KIND in value:
        data = value.get("table", {}).get("data", [])
        fields = value.get("table", {}).get("schema", {}).get("fields", [])
        return f"<{value[KIND]}: {len(data)} rows, {len(fields)} columns>"
    text = json.dumps(value)
    return value if len(text) <= SUMMARY_LIMIT else f"<{type(value).__name__}, {len(text)} chars>"
