"""Enqueue inside a transaction: the jobs and your own rows commit together, or not at all.

    with q.transaction() as tx:                       # async: async with q.aio.transaction()
        tx.execute("INSERT INTO orders VALUES ($1, $2)", 1, 9.5)
        tx.enqueue("invoice", {"order": 1})
        q.workflow("etl").step("extract").workflow.submit(tx)

On an exception nothing is written, and since NOTIFY is transactional no worker is woken.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from pgq_nb import db, enqueue_submit, runtime

if TYPE_CHECKING:
    import asyncpg
    import pandas as pd

    from pgq_nb.registry import Registry
    from pgq_nb.store import Store


class AsyncTransaction:
    """A transaction on a pooled connection, for async code. Every method runs on the pgq_nb
    loop, whichever loop awaits it."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        connection: asyncpg.Connection | None = None,
        *,
        already_open: bool = False,
    ) -> None:
        self.store = store
        self.registry = registry
        self.connection = connection
        self._tx: Any = None
        self._release: Any = None
        self._open = already_open  # True: someone else's `async with conn.transaction()`

    @runtime.bridged
    async def begin(self) -> AsyncTransaction:
        """Take a connection from the pool and start the transaction."""
        if self.connection is None:
            self.connection = await self.store.pool.acquire()
            self._release = self.store.pool
        self._tx = self.connection.transaction()
        await self._tx.start()
        self._open = True
        return self

    @runtime.bridged
    async def end(self, commit: bool) -> None:
        """Commit (or roll back) and give the connection back."""
        try:
            if self._tx is not None:
                await (self._tx.commit() if commit else self._tx.rollback())
        finally:
            self._tx = None
            self._open = False
            if self._release is not None and self.connection is not None:
                try:
                    await db.reset_session(self.connection)  # user SQL may have SET things
                except Exception:  # a broken connection: the pool replaces it
                    self.connection.terminate()
                await self._release.release(self.connection)
                self.connection = None
                self._release = None

    async def __aenter__(self) -> AsyncTransaction:
        return await self.begin()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        await self.end(exc_type is None)

    def _conn(self) -> asyncpg.Connection:
        if self.connection is None or not self._open:
            raise RuntimeError("this transaction is not open; use it inside its `with` block")
        return self.connection

    @runtime.bridged
    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement in the transaction; returns its status (like asyncpg)."""
        status: str = await self._conn().execute(query, *args)
        return status

    @runtime.bridged
    async def fetch(self, query: str, *args: Any) -> list[Any]:
        """Rows of a query, as asyncpg Records."""
        rows: list[Any] = await self._conn().fetch(query, *args)
        return rows

    @runtime.bridged
    async def fetchrow(self, query: str, *args: Any) -> Any:
        """The first row of a query, or None."""
        return await self._conn().fetchrow(query, *args)

    @runtime.bridged
    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first value of the first row of a query."""
        return await self._conn().fetchval(query, *args)

    @runtime.bridged
    async def copy_records_to_table(
        self,
        table: str,
        *,
        records: Any,
        columns: list[str] | None = None,
        schema_name: str | None = None,
    ) -> str:
        """Bulk-load rows with COPY (asyncpg's ``copy_records_to_table``)."""
        status: str = await self._conn().copy_records_to_table(
            table, records=records, columns=columns, schema_name=schema_name
        )
        return status

    @runtime.bridged
    async def enqueue(
        self, /, entrypoint: Any, payload: Any = None, priority: Any = 0, **kwargs: Any
    ) -> Any:
        """``q.enqueue`` inside this transaction."""
        return await enqueue_submit.enqueue_on(
            self.store,
            self.registry,
            entrypoint,
            payload,
            priority,
            connection=self._conn(),
            **kwargs,
        )

    @runtime.bridged
    async def enqueue_df(self, /, entrypoint: str, df: pd.DataFrame, **kwargs: Any) -> pd.Series:
        """``q.enqueue_df`` inside this transaction."""
        from pgq_nb.notebook.enqueue import enqueue_df

        conn = self._conn()
        call = enqueue_df(
            self.store,
            self.registry,
            lambda: enqueue_submit.analyze_jobs(self.store),
            entrypoint,
            df,
            connection=conn,
            **kwargs,
        )
        series: pd.Series = await runtime.run_for(conn, call)
        return series


class Transaction:
    """A transaction for notebooks and scripts: ``with q.transaction() as tx:``."""

    def __init__(self, aio: AsyncTransaction) -> None:
        self.aio = aio

    @property
    def connection(self) -> asyncpg.Connection | None:
        """The asyncpg connection (it belongs to the pgq_nb loop thread)."""
        return self.aio.connection

    def __enter__(self) -> Transaction:
        runtime.run_sync(self.aio.begin(), "q.transaction()")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        runtime.run_sync(self.aio.end(exc_type is None), "q.transaction()")

    begin = runtime.blocking(AsyncTransaction.begin, lambda aio: Transaction(aio))
    end = runtime.blocking(AsyncTransaction.end)
    execute = runtime.blocking(AsyncTransaction.execute)
    fetch = runtime.blocking(AsyncTransaction.fetch)
    fetchrow = runtime.blocking(AsyncTransaction.fetchrow)
    fetchval = runtime.blocking(AsyncTransaction.fetchval)
    copy_records_to_table = runtime.blocking(AsyncTransaction.copy_records_to_table)
    enqueue = runtime.blocking(AsyncTransaction.enqueue)
    enqueue_df = runtime.blocking(AsyncTransaction.enqueue_df)
