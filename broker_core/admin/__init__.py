"""Admin controls of a node's pools: drain (``drain``), maintenance windows (``maintenance``),
inventory changes (``inventory``), each recorded in the audit log (``broker_core.audit``).

Every one is for admins only (a 403 for anyone else), names a pool by its platform and its
name on the platform (a 404 for a pool the node does not have, or no longer configures), and
takes every pool's lock first (``ledger.lock_all_pools``, the order every locker of several
pools takes), so that it is serialised with every claim, accept and expiry on SQLite and
PostgreSQL alike. ``pools`` holds what they share: the pool lookup and its state as answers and
``GET /node`` show it.
"""
