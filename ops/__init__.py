"""What an operator sees: request records, metrics, structured logs, health checks.

`server.py` wires it in; `ops` imports nothing of ours but `db.engine`, so `schema/` and
`realtime/` may use its hooks (say, `metrics.open_subscription()`) without a cycle.
"""
