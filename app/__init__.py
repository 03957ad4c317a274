"""The process around the GraphQL layers: settings, the Starlette app, the command line.

Above `transport` in the layers (server.py → app → transport → schema → ...): the only package
that reads the environment and hands the rest what it needs. `server.py` is its entry point.

- `settings.py`: `Settings`, every `CHATQL_*` variable, and the schema's `Config` made of them.
- `factory.py`: `create_app`, the GraphQL view, the edge middleware, `serving_app` for uvicorn.
- `commands.py`: the commands but `serve` (migrate, create-admin, seed, export-schema).
- `serve.py`: `serve`, uvicorn and its worker processes.
- `cli.py`: the argument parser and `main`.
- `tracing.py`: OpenTelemetry spans (the `tracing` extra), imported only when tracing is on.
"""
