"""The parts a workflow is built of (:mod:`pgq_nb.workflow_build`): step handles, the steps
as nodes before they are written, and the checks of a map's rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb.encoding import encode_payload
from pgq_nb.errors import InvalidInputError
from pgq_nb.labels import Meta, Tags

if TYPE_CHECKING:
    from pgq_nb.workflow_build import WorkflowBuilder


@dataclasses.dataclass(frozen=True, eq=False)
class Step:
    """A handle on one step (or, for ``map``, on every step it made), to pass as
    ``depends_on``."""

    workflow: WorkflowBuilder
    name: str
    indices: tuple[int, ...]
    #: a ``map_over``: its place among the workflow's maps (its steps are made at run time)
    map_over: int | None = None

    def __len__(self) -> int:
        if self.map_over is not None:
            raise TypeError(
                f"map_over {self.name!r} has as many steps as its parent's result has items, "
                "known only at run time; look at run.status() once it has run"
            )
        return len(self.indices)

    def __repr__(self) -> str:
        if self.map_over is not None:
            return f"<Step {self.name!r} (map_over) of workflow {self.workflow.name!r}>"
        kind = f"map of {len(self.indices)}" if len(self.indices) != 1 else "step"
        return f"<Step {self.name!r} ({kind}) of workflow {self.workflow.name!r}>"


@dataclasses.dataclass
class Node:
    entrypoint: str
    payload: bytes | None
    priority: int
    name: str
    map_index: int | None
    depends_on: list[Step | str]
    tags: Tags = None
    meta: Meta = None
    use_cache: bool = True  # cache=False: run even if a cached result exists (pgq_nb.caching)


Dependency = Step | str | Sequence[Step | str] | None


def is_frame(rows: Any) -> bool:
    """A DataFrame (told without importing pandas)."""
    return callable(getattr(rows, "to_dict", None)) and hasattr(rows, "columns")


def rows_of(rows: Any) -> list[Any]:
    """The items of any iterable but a DataFrame (the notebook layer writes those)."""
    if isinstance(rows, str | bytes | dict):
        raise InvalidInputError("map() takes a DataFrame or an iterable of payloads")
    try:
        return list(rows)
    except TypeError:
        raise InvalidInputError("map() takes a DataFrame or an iterable of payloads") from None


def item_payload(item: Any, step: str, i: int) -> bytes | None:
    try:
        return encode_payload(item)
    except InvalidInputError as exc:
        raise type(exc)(f"map {step!r}, row {i}: {exc}") from None


def shown(node: Node) -> str:
    """A step in messages: its name, and its row for a step of a map."""
    return repr(node.name) if node.map_index is None else f"{node.name!r}[{node.map_index}]"
