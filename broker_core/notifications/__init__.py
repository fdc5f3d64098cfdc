"""Telling people what happens to their sessions: webhooks and e-mail, from an outbox.

An event (accepted, preparing, ready, ending soon, ended, failed, a booking affected by
maintenance) is written to the ``notification_outbox`` table in the transaction of the change
that causes it, one row per channel (the request's webhook, its e-mail recipients). A worker
in every node process delivers the rows it holds a lease on, retrying with back-off, so a
delivery never blocks or fails the lifecycle and survives a restart. Delivery is at least
once: a webhook carries a stable ``webhook-id`` its receiver deduplicates on.
"""
