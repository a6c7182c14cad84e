"""Cron schedules: ``@q.schedule`` and their management (:mod:`.api`), the fire-time logic as
pure functions (:mod:`.cron`, with the expression and zone parsing in :mod:`.syntax`), the
schedules and their ticks in the database (:mod:`.database`) and the loop each worker runs to
fire due ticks (:mod:`.runner`)."""
