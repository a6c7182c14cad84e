"""The cell of parameters, injected the way papermill does it.

The values go into a new code cell tagged ``injected-parameters``, placed right after the first
cell tagged ``parameters`` (whose values are then the defaults), or replacing an
``injected-parameters`` cell already there, or at the top when no cell is tagged. The cell
assigns each parameter as a Python literal, under the comment ``# Parameters``. Pure functions
on the notebook as plain JSON (dicts and lists), so they need no nbformat and are table-tested.
"""

from __future__ import annotations

import keyword
from typing import Any

from pgq_nb.errors import InvalidInputError

PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


def check_name(name: object) -> str:
    """A parameter's name: a Python identifier that is not a keyword."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise InvalidInputError(
            f"parameter name {name!r} is not a Python variable name: use names like "
            "'region' or 'start_date' (letters, digits and underscores, not starting with a "
            "digit, not a keyword)"
        )
    return name


def source(parameters: dict[str, Any]) -> str:
    """The injected cell's code: ``# Parameters`` then one assignment per parameter (JSON
    values, whose ``repr`` is a Python literal)."""
    lines = ["# Parameters"]
    lines += [f"{check_name(name)} = {value!r}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def tagged(cell: dict[str, Any], tag: str) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    return isinstance(tags, list) and tag in tags


def first_tagged(cells: list[dict[str, Any]], tag: str) -> int | None:
    """The index of the first cell carrying ``tag``, or None."""
    return next((i for i, cell in enumerate(cells) if tagged(cell, tag)), None)


def inject(cells: list[dict[str, Any]], parameters: dict[str, Any]) -> tuple[list[Any], int]:
    """``cells`` with the injected cell in place, and its index. Nothing is injected for no
    parameters (the index is then -1)."""
    if not parameters:
        return list(cells), -1
    new: dict[str, Any] = {
        "cell_type": "code",
        "execution_count": None,
        "metadata": {"tags": [INJECTED_TAG]},
        "outputs": [],
        "source": source(parameters),
    }
    if any("id" in cell for cell in cells):  # nbformat 4.5 and later: every cell has an id
        taken = {cell.get("id") for cell in cells}
        new["id"] = next(
            f"injected-parameters-{n}"
            for n in range(len(cells) + 1)
            if f"injected-parameters-{n}" not in taken
        )
    injected = first_tagged(cells, INJECTED_TAG)
    if injected is not None:
        return [*cells[:injected], new, *cells[injected + 1 :]], injected
    tagged_at = first_tagged(cells, PARAMETERS_TAG)
    at = 0 if tagged_at is None else tagged_at + 1
    return [*cells[:at], new, *cells[at:]], at


def user_cell_number(index: int, injected_at: int, replaced: bool) -> int:
    """The 1-based number, in the notebook as enqueued, of the cell at ``index`` of the
    executed notebook (which holds the injected cell at ``injected_at``, -1 for none;
    ``replaced``: it took the place of an ``injected-parameters`` cell already there)."""
    if injected_at < 0 or replaced or index <= injected_at:
        return index + 1
    return index
