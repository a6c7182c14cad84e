"""A worker module that defines no handler (a deploy mistake): `pgq-nb worker empty_app:q`
must refuse to start."""

from __future__ import annotations

import pgq_nb

q = pgq_nb.connect()
