"""Workflow steps made at run time: ``wf.map_over(parent, entrypoint)`` (issue #21, item 1).

A map_over is a node of the run (a row of ``workflow_maps``), not a step: its steps are made
when a *source* succeeds, one per item of the source's result (a list, or a DataFrame's rows),
in the transaction that records the source's success (``expand_maps``, after ``finish_jobs``,
which moves only the jobs this worker still holds: a source taken back from a dead worker
expands only when its new run succeeds, once). The sources of a map over a step or a static
``wf.map`` are those steps (written at submit); those of a map over another map_over are that
map's steps, registered as they are made.

A step that waits on maps is counted like any other (``pending_deps``): at submit, for each
map_over it depends on, the number of static sources at the root of that map's chain; when a
source of map ``M`` expands into N steps, every step waiting on ``M`` or on a map below it is
counted up by ``weight * (N - 1)`` (``weight``: through how many of its map_over parents it
waits on ``M``); each step made is then counted off as it succeeds (an edge in ``job_deps``
to the steps that depend on the map directly), or replaced in turn by its own items (a map
below). So the count reaches 0 exactly when every source of the chain has expanded and every
step made has succeeded, however many there turn out to be; 0 items counts the source off.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb.errors import MapSourceError

if TYPE_CHECKING:
    from pgq_nb.labels import Meta, Tags
    from pgq_nb.models import Job


@dataclasses.dataclass
class MapNode:
    """A ``wf.map_over`` being built: ``parent`` is a step handle (``workflow_build.Step``) or
    a step name."""

    entrypoint: str
    name: str
    priority: int
    parent: Any
    tags: Tags = None
    meta: Meta = None


@dataclasses.dataclass
class MapPlan:
    """What submit writes for the map_overs: the parent map of each (None: a static parent),
    the static sources ``(node, map)``, the waiting steps ``(map, node, direct, weight)``, and
    how many sources each node waits for at first (lined up with the nodes)."""

    parent_maps: list[int | None]
    sources: list[tuple[int, int]]
    waiting: list[tuple[int, int, bool, int]]
    pending: list[int]


def plan(
    parents: Sequence[tuple[int | None, Sequence[int]]],
    children: Sequence[tuple[int, int]],
    nodes: int,
) -> MapPlan:
    """The :class:`MapPlan` of maps whose parents are ``(parent map or None, static parent
    node indices)``, with ``children`` ``(map, node)``: node depends on map. Pure; the maps
    form no cycle (the builder checks)."""
    parent_maps = [p for p, _ in parents]
    sources = [
        (node, k) for k, (p, nodes_of) in enumerate(parents) if p is None for node in nodes_of
    ]

    def chain(k: int) -> list[int]:
        out = [k]
        while (up := parent_maps[out[-1]]) is not None:
            out.append(up)
        return out

    weights: dict[tuple[int, int], int] = {}
    direct: set[tuple[int, int]] = set()
    pending = [0] * nodes
    for k, child in sorted(set(children)):
        direct.add((k, child))
        maps = chain(k)
        for m in maps:
            weights[(m, child)] = weights.get((m, child), 0) + 1
        pending[child] += len(parents[maps[-1]][1])
    waiting = [(m, c, (m, c) in direct, w) for (m, c), w in sorted(weights.items())]
    return MapPlan(parent_maps, sources, waiting, pending)


async def write(
    conn: Any,
    queries: dict[str, str],
    workflow_id: int,
    maps: Sequence[MapNode],
    found: MapPlan,
    ids: Sequence[int],
) -> None:
    """Write the map_overs of a run being submitted (``ids``: its steps' job ids)."""
    map_ids: list[int] = []
    for node, parent in zip(maps, found.parent_maps, strict=True):
        map_ids.append(
            await conn.fetchval(
                queries["insert_workflow_map"],
                workflow_id,
                node.name,
                node.entrypoint,
                node.priority,
                node.tags,
                None if node.meta is None else json.dumps(node.meta),
                None if parent is None else map_ids[parent],
            )
        )
    if found.sources:
        await conn.execute(
            queries["insert_map_sources"],
            [ids[n] for n, _ in found.sources],
            [map_ids[k] for _, k in found.sources],
        )
    if found.waiting:
        await conn.execute(
            queries["insert_map_deps"],
            [map_ids[k] for k, _, _, _ in found.waiting],
            [ids[c] for _, c, _, _ in found.waiting],
            [d for _, _, d, _ in found.waiting],
            [w for _, _, _, w in found.waiting],
        )


_KINDS = {"{": "a dict", '"': "a str", "t": "a bool", "f": "a bool", "n": "None"}


def result_error(job: Job, result_json: str | None, series: bool = False) -> MapSourceError | None:
    """A source of a map_over must return a list (or a DataFrame, stored as its rows): the
    MapSourceError (naming the step and what it returned) its attempt fails with, else None.
    ``series``: the result was a pandas Series (stored as a dict)."""
    if not job._expands or (result_json is not None and result_json.startswith("[")):
        return None
    if series:
        return MapSourceError(
            f"step {job.step_name!r} (job {job.id}) returned a pandas Series, but a "
            "wf.map_over runs one step per item of a list or row of a DataFrame: return "
            "series.tolist() (one step per value) or series.reset_index() (one step per "
            "index label and value)"
        )
    kind = "None" if result_json is None else _KINDS.get(result_json[:1], "a number")
    return MapSourceError(
        f"step {job.step_name!r} (job {job.id}) returned {kind}, but a wf.map_over runs one "
        f"step per item of its result: return a list (one item per step, e.g. [{{...}}, ...]) "
        "or a DataFrame (one step per row); return [] for no steps"
    )


async def expand(
    conn: Any,
    queries: dict[str, str],
    batch: Sequence[Any],
    done: Any,
    sources: Sequence[int] | None = None,
) -> None:
    """After ``finish_jobs`` in the same transaction: expand the sources among the steps of
    ``batch`` (finished attempts) that ``done`` says succeeded (of ``sources`` only, when
    given: the worker knows them from the claim, and a batch without one costs nothing). One
    statement; it makes nothing for steps that are not sources. Steps made in a run cancelled
    meanwhile end cancelled at once, as its other waiting steps did (a retry of the run
    requeues them with the rest)."""
    moved = {r["id"] for r in done if r["outcome"] == "succeeded" and r["workflow_id"]}
    if sources is not None:
        moved.intersection_update(sources)
    if not moved:
        return
    rows = [f for f in batch if f.id in moved and f.outcome == "succeeded"]
    made = await conn.fetchrow(
        queries["expand_maps"],
        [f.id for f in rows],
        [f.result if f.result is not None and f.result.startswith("[") else None for f in rows],
    )
    if made["cancelled"]:  # a source of a cancelled run that finished anyway
        await conn.execute(queries["cancel_waiting"], made["cancelled"])
