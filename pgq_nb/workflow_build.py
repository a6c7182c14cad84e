"""Workflows: build a DAG of jobs in Python, validate it, write it in one transaction.

    wf = q.workflow("daily_etl")
    raw = wf.step("extract", {"day": "2026-11-28"})
    parts = wf.map("transform", df, depends_on=raw)     # fan-out: one step per row
    total = wf.step("aggregate", depends_on=parts)      # fan-in
    run = wf.submit()

Everything lives in Postgres (steps are jobs, edges are rows of job_deps), so any worker can
run any step and a restart loses nothing.
"""

from __future__ import annotations

import graphlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pgq_nb import keys, runtime, tracing, workflow_maps
from pgq_nb.caching import check_cacheable, check_use_cache
from pgq_nb.encoding import encode_payload
from pgq_nb.errors import InvalidInputError, did_you_mean
from pgq_nb.labels import check_meta, check_tags, label
from pgq_nb.models import check_int, check_text, refuse_frame
from pgq_nb.query_errors import guarded
from pgq_nb.workflow_nodes import Dependency, Node, Step, is_frame, item_payload, rows_of, shown

if TYPE_CHECKING:
    from pgq_nb.registry import Registry
    from pgq_nb.store import Store
    from pgq_nb.workflow_run import AsyncWorkflowRun, WorkflowRun


class WorkflowBuilder:
    """A workflow being built. Nothing is written until ``submit()``."""

    def __init__(self, store: Store, registry: Registry, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InvalidInputError("a workflow name must be a non-empty string")
        check_text("workflow name", name)
        self.store = store
        self.registry = registry
        self.name = name
        self._nodes: list[Node] = []
        self._names: dict[str, Step] = {}
        #: (entrypoint, first node, end node, dtypes as JSON) of each map over a DataFrame
        self._dtypes: list[tuple[str, int, int, str]] = []
        self._maps: list[workflow_maps.MapNode] = []
        self._map_children: list[tuple[int, int]] = []  # (map, node): node depends on map

    def _unique_name(self, wanted: str | None, entrypoint: str) -> str:
        if wanted is not None:
            if not isinstance(wanted, str) or not wanted:
                raise InvalidInputError("a step name must be a non-empty string")
            check_text("step name", wanted)
            if wanted in self._names:
                raise InvalidInputError(
                    f"workflow {self.name!r} already has a step named {wanted!r}; "
                    "give each step a unique name="
                )
            return wanted
        name, n = entrypoint, 2
        while name in self._names:
            name, n = f"{entrypoint}_{n}", n + 1
        return name

    def _deps(self, depends_on: Dependency) -> list[Step | str]:
        if depends_on is None:
            return []
        items = [depends_on] if isinstance(depends_on, Step | str) else list(depends_on)
        for dep in items:
            if isinstance(dep, Step):
                if dep.workflow is not self:
                    raise InvalidInputError(
                        f"step {dep.name!r} belongs to workflow {dep.workflow.name!r}, not "
                        f"{self.name!r}; a step can only depend on steps of its own workflow"
                    )
            elif not isinstance(dep, str):
                raise InvalidInputError(
                    f"depends_on takes steps (or step names), not {type(dep).__name__}"
                )
        return items

    def step(
        self,
        entrypoint: str,
        payload: Any = None,
        *,
        depends_on: Dependency = None,
        name: str | None = None,
        priority: int = 0,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> Step:
        """Add one step: a job of ``entrypoint`` that runs once every step it depends on has
        succeeded. ``name`` (default: the entrypoint) keys its result in its children's
        ``job.parent_results()``. ``tags`` and ``meta`` label its job (:mod:`pgq_nb.labels`).
        ``cache=False`` runs it even if its entrypoint has ``cache=True`` and a cached result
        exists (:mod:`pgq_nb.caching`)."""
        if not isinstance(entrypoint, str) or not entrypoint:
            raise InvalidInputError("entrypoint must be a non-empty string")
        refuse_frame(payload, f"wf.map({entrypoint!r}, {{rows}})")
        step_name = self._unique_name(name, entrypoint)
        node = Node(
            entrypoint=entrypoint,
            payload=encode_payload(payload),
            priority=check_int("priority", priority),
            name=step_name,
            map_index=None,
            depends_on=self._deps(depends_on),
            tags=check_tags(tags),
            meta=check_meta(meta),
            use_cache=check_use_cache(cache),
        )
        self._nodes.append(node)
        handle = Step(self, step_name, (len(self._nodes) - 1,))
        self._names[step_name] = handle
        return handle

    def map(
        self,
        entrypoint: str,
        rows: Iterable[Any],
        *,
        depends_on: Dependency = None,
        name: str | None = None,
        priority: int = 0,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
        cache: bool | None = None,
    ) -> Step:
        """Fan out: one step per row of a DataFrame (the row as a dict payload, written as
        ``q.enqueue_df`` writes it, its columns' dtypes recorded for ``q.results()``) or per
        item of an iterable. Their results reach children as a list, in row order. ``tags``
        and ``meta`` label every job of the map; ``cache=False`` runs every one of them even
        if cached results exist (:mod:`pgq_nb.caching`)."""
        if not isinstance(entrypoint, str) or not entrypoint:
            raise InvalidInputError("entrypoint must be a non-empty string")
        step_name = self._unique_name(name, entrypoint)
        deps = self._deps(depends_on)
        prio = check_int("priority", priority)
        labels = check_tags(tags), check_meta(meta)
        use_cache = check_use_cache(cache)
        first = len(self._nodes)
        payloads: Sequence[bytes | None]
        if is_frame(rows):  # written as enqueue_df writes rows, its dtypes recorded
            from pgq_nb.notebook.map_frames import frame_payloads

            payloads, recorded = frame_payloads(rows, step_name)
            if payloads:
                self._dtypes.append((entrypoint, first, first + len(payloads), recorded))
        else:
            payloads = [item_payload(item, step_name, i) for i, item in enumerate(rows_of(rows))]
        for i, payload in enumerate(payloads):
            self._nodes.append(
                Node(entrypoint, payload, prio, step_name, i, deps, *labels, use_cache)
            )
        handle = Step(self, step_name, tuple(range(first, len(self._nodes))))
        self._names[step_name] = handle
        return handle

    def map_over(
        self,
        parent: Step | str,
        entrypoint: str,
        *,
        name: str | None = None,
        priority: int = 0,
        tags: Sequence[str] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Step:
        """Fan out at run time: one step of ``entrypoint`` per item of the list (or row of the
        DataFrame) that ``parent`` returns, made in the transaction that records the parent's
        success. ``parent`` is a step, a ``map`` (each of its steps expands on its own) or
        another ``map_over`` (a map over a map). A step that depends on this one waits for all
        of its steps, however many, and gets their results as one list, in order (by parent
        step, then item; an empty list for none). A parent that returns anything else fails
        for good, and what depends on the map ends upstream_failed."""
        if not isinstance(entrypoint, str) or not entrypoint:
            raise InvalidInputError("entrypoint must be a non-empty string")
        if not isinstance(parent, Step | str):
            raise InvalidInputError(
                f"map_over takes the step whose result it expands (a step, map or map_over of "
                f"this workflow, or its name), not {type(parent).__name__}; for rows you have "
                "now, use wf.map(entrypoint, rows)"
            )
        self._deps(parent)  # a step of this workflow
        step_name = self._unique_name(name, entrypoint)
        node = workflow_maps.MapNode(
            entrypoint,
            step_name,
            check_int("priority", priority),
            parent,
            check_tags(tags),
            check_meta(meta),
        )
        self._maps.append(node)
        handle = Step(self, step_name, (), map_over=len(self._maps) - 1)
        self._names[step_name] = handle
        return handle

    def _resolve(self, dep: Step | str, node: str, *, expands: bool = False) -> Step:
        if isinstance(dep, Step):
            return dep
        found = self._names.get(dep)
        if found is None:
            what = f"map_over {node!r} expands" if expands else f"step {node!r} depends on"
            raise InvalidInputError(
                f"{what} {dep!r}, which is not a step of workflow "
                f"{self.name!r}{did_you_mean(dep, self._names)}; its steps: {sorted(self._names)}"
            )
        return found

    def _edges(self) -> list[tuple[int, int]]:
        """(parent index, child index) pairs (and, in ``_map_children``, the nodes that
        depend on a map_over); refuses unknown names, self-dependencies and cycles."""
        edges: set[tuple[int, int]] = set()
        graph: dict[str, set[str]] = {n: set() for n in self._names}
        children: set[tuple[int, int]] = set()
        for child, node in enumerate(self._nodes):
            for wanted in node.depends_on:
                dep = self._resolve(wanted, node.name)
                if dep.name == node.name:
                    raise InvalidInputError(f"step {node.name!r} depends on itself")
                edges.update((parent, child) for parent in dep.indices)
                if dep.map_over is not None:
                    children.add((dep.map_over, child))
                    graph[node.name].add(dep.name)
        for m in self._maps:
            up = self._resolve(m.parent, m.name, expands=True)
            if up.name == m.name:
                raise InvalidInputError(f"map_over {m.name!r} depends on itself")
            graph[m.name].add(up.name)
        self._map_children = sorted(children)
        for parent, child in edges:
            graph[self._nodes[child].name].add(self._nodes[parent].name)
        try:
            tuple(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = " -> ".join(exc.args[1])
            raise InvalidInputError(
                f"workflow {self.name!r} has a cycle: {cycle}; a step cannot (indirectly) "
                "depend on itself"
            ) from None
        return sorted(edges)

    @guarded("submit")
    async def _submit(self, connection: Any = None) -> int:
        """Validate and write the whole workflow in one transaction; return its id."""
        if not self._nodes and not self._maps:
            raise InvalidInputError(f"workflow {self.name!r} has no steps; add some with step()")
        edges = self._edges()
        found = self._map_plan()
        parents = list(found.pending)
        for _, child in edges:
            parents[child] += 1
        traced = f"workflow {self.name}"
        async with (
            self.store.connection(connection) as conn,
            conn.transaction(),
            tracing.enqueue_context(self.store, conn, traced),
        ):
            return await self._write(conn, edges, parents, found)

    def _map_plan(self) -> workflow_maps.MapPlan:
        parents: list[tuple[int | None, tuple[int, ...]]] = []
        for m in self._maps:
            up = self._resolve(m.parent, m.name, expands=True)
            parents.append((up.map_over, up.indices))
        return workflow_maps.plan(parents, self._map_children, len(self._nodes))

    async def _write(
        self,
        conn: Any,
        edges: list[tuple[int, int]],
        parents: list[int],
        found: workflow_maps.MapPlan,
    ) -> int:
        q = self.store
        nodes = self._nodes
        check_cacheable(
            self.registry,
            [n.entrypoint for n in nodes],
            [n.payload for n in nodes],
            lambda i: f"the payload of step {shown(nodes[i])}",
        )
        entrypoints = {n.entrypoint for n in self._nodes} | {m.entrypoint for m in self._maps}
        await self.registry.prepare(entrypoints, conn)
        step_keys = keys.batch_keys(  # per-key limits; a step that cannot be keyed: nothing written
            self.registry,
            [n.entrypoint for n in nodes],
            [n.payload for n in nodes],
            lambda i: f"step {nodes[i].name!r}",
        )
        row = await conn.fetchrow(q.queries["create_workflow"], self.name, len(self._nodes))
        ids = (await conn.fetchrow(q.queries["reserve_job_ids"], len(self._nodes)))["ids"]
        await conn.execute(
            q.queries["insert_steps"],
            ids,
            [n.entrypoint for n in nodes],
            [n.payload for n in nodes],
            [n.priority for n in nodes],
            parents,
            [n.name for n in nodes],
            [n.map_index for n in nodes],
            row["id"],
        )
        await label(q.queries, conn, ids, [n.tags for n in nodes], [n.meta for n in nodes])
        if step_keys is not None:
            await keys.apply(q.queries, conn, ids, step_keys)
        uncached = [i for i, n in zip(ids, nodes, strict=True) if not n.use_cache]
        if uncached:
            await conn.execute(q.queries["uncache_jobs"], uncached)
        if edges:
            await conn.execute(
                q.queries["insert_edges"], [ids[p] for p, _ in edges], [ids[c] for _, c in edges]
            )
        for entrypoint, first, end, recorded in self._dtypes:
            await conn.execute(
                q.queries["record_dtypes_of_ids"], entrypoint, ids[first:end], recorded
            )
        if self._maps:
            await workflow_maps.write(conn, q.queries, row["id"], self._maps, found, ids)
        workflow_id: int = row["id"]
        return workflow_id

    def __repr__(self) -> str:
        return f"<Workflow {self.name!r}: {len(self._nodes)} steps, not submitted>"


def _unwrap(connection: Any) -> Any:
    """The asyncpg connection of a q.transaction() / q.aio.transaction(), or ``connection``."""
    inner = getattr(connection, "aio", connection)  # Transaction -> AsyncTransaction
    if hasattr(inner, "begin") and hasattr(inner, "connection"):
        if inner.connection is None:
            raise InvalidInputError("that transaction is not open; submit inside its block")
        return inner.connection
    return connection


class AsyncWorkflow(WorkflowBuilder):
    """A workflow being built, for async code (``q.aio.workflow(name)``)."""

    async def submit(self, connection: Any = None) -> AsyncWorkflowRun:
        """Validate and write the whole workflow in one transaction, in bulk (thousands of
        steps in a few statements); returns its run. A refused workflow writes nothing.

        With ``connection`` (an asyncpg connection, such as a ``q.aio.transaction()``'s), it
        commits or rolls back with that connection's transaction.
        """
        from pgq_nb.workflow_run import AsyncWorkflowRun

        conn = _unwrap(connection)
        if conn is None or conn is not connection:  # the pool's, or a q.aio.transaction()'s
            workflow_id = await runtime.run_here(self._submit(conn))
        else:  # the caller's own asyncpg connection, on the caller's loop
            workflow_id = await self._submit(conn)
        return AsyncWorkflowRun(self.store, workflow_id, self.name)


class Workflow(WorkflowBuilder):
    """A workflow being built, for notebooks and scripts (``q.workflow(name)``)."""

    def submit(self, connection: Any = None) -> WorkflowRun:
        """Validate and write the whole workflow in one transaction, in bulk; returns its run.
        A refused workflow (cycle, unknown entrypoint, ...) writes nothing."""
        from pgq_nb.workflow_run import AsyncWorkflowRun, WorkflowRun

        workflow_id = runtime.run_sync(self._submit(_unwrap(connection)), "wf.submit()")
        return WorkflowRun(AsyncWorkflowRun(self.store, workflow_id, self.name))
