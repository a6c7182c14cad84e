-- Named queries of OpenTelemetry tracing (pgq_nb.tracing). `{schema}` is replaced by the
-- validated, quoted schema name when the file is loaded.

-- name: set_traceparent
-- Set (or, with '', clear) the W3C traceparent that jobs inserted in this transaction record
-- (the default of jobs.trace_context); transaction-local, so it never outlives the enqueue.
-- params: $1 traceparent text ('' for none)
SELECT set_config('pgq_nb.traceparent', $1, true);
