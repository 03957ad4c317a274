"""chatql's entry point: `python server.py [COMMAND]` runs `app.cli.main`.

`python server.py` migrates the database and serves on 127.0.0.1:8000; `python server.py --help`
lists the commands. The settings, the app and the commands live in the `app` package.
`server:serving_app` stays the app factory for running uvicorn by hand (`uvicorn
server:serving_app --factory`), at this commit and at older ones alike (bench/run.py does).
"""

from __future__ import annotations

from app.cli import main
from app.factory import serving_app

__all__ = ["main", "serving_app"]

if __name__ == "__main__":
    raise SystemExit(main())
