"""What an operator sees: request records, metrics, structured logs, health checks, and the
progress of a long write (`seed`).

`app.factory` wires it in; `ops` imports nothing of ours but `db.engine`. Open subscriptions
are counted by the schema extension `ops.instrument.OperationRecorder`, for every transport,
so the real-time code need not report them.
"""
