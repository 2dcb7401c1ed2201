"""Usage logging: every call recorded in Postgres by a background writer, and the logs/usage/analytics APIs.

Modules: ``record`` (what the request path hands over), ``rows`` (record -> row, the column order),
``usage`` and ``pricing`` (tokens and cost), ``writer`` (queue, batches, spool), ``db`` and ``migrate``
(pool and schema), ``retention``, ``queries`` and ``api`` (the read side).
"""
