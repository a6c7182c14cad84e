"""Notebooks as jobs (issue #18, item 4): ``q.enqueue_notebook(path, parameters=...)`` stores
the notebook's content (once per sha256) and enqueues a job of the built-in entrypoint
:data:`~pgq_nb.nbjobs.content.ENTRYPOINT`, which a worker runs in a real Jupyter kernel once it
has opted in (``q.serve_notebooks()``, ``pgq-nb worker app:q --notebooks``).

- ``content``: reading and checking a notebook and its parameters, the stored content, and
  :func:`~pgq_nb.nbjobs.content.notebook_job_payload` (what to enqueue, for schedules too);
- ``parameters``: the cell of parameters injected after the cell tagged ``parameters``, as
  papermill does (pure, table-tested);
- ``records``: what ``pgq_nb.record(name, value)`` sends out of the kernel (a display output of
  the mimetype :data:`~pgq_nb.nbjobs.records.MIMETYPE`) and how the runner collects it;
- ``runner``: the handler that runs a notebook with nbclient (imported lazily: nbclient,
  nbformat, nbconvert and ipykernel are the ``pgq_nb[notebooks]`` extra);
- ``output``: ``q.notebook_output(job_id)``, the executed notebook shown in an iframe;
- ``api``: the queue's methods.

Nothing here imports pandas or IPython: ``q.notebook_runs()`` builds its DataFrame in
``pgq_nb.notebook.notebook_runs``, and ``pgq_nb.record`` displays through
``pgq_nb.notebook.record`` (both loaded on first use).
"""
