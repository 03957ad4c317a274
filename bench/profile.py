"""Profile one workload in-process: `python bench/profile.py DATABASE_URL [Q1|Q1+|Q2] [N]`.

Runs the query N times through the real app (httpx over ASGI, no sockets) under pyinstrument
and prints the profile; the database must hold the bench data set (see bench/run).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
from pyinstrument import Profiler

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.factory import create_app
from app.settings import Settings
from bench.workloads import Q1, Q1_PLUS, Q2


async def main(url: str, name: str, times: int) -> None:
    app = create_app(Settings(database_url=url, secret_key="profile-secret-key-long-enough"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            login = await client.post(
                "/graphql",
                json={
                    "query": 'mutation { logIn(input: {login: "user1", password: '
                    '"chatql-demo"}) { token } }'
                },
            )
            token = login.json()["data"]["logIn"]["token"]
            headers = {"Authorization": f"Bearer {token}"}
            body: dict[str, object] = {"query": Q1_PLUS if name == "Q1+" else Q1}
            if name == "Q2":
                me = await client.post(
                    "/graphql",
                    json={"query": "{ me { conversations(first: 1) { edges { node { id } } } } }"},
                    headers=headers,
                )
                node = me.json()["data"]["me"]["conversations"]["edges"][0]["node"]
                body = {"query": Q2, "variables": {"id": node["id"]}}
            await client.post("/graphql", json=body, headers=headers)
            profiler = Profiler(async_mode="disabled")
            started = time.perf_counter()
            with profiler:
                for _ in range(times):
                    response = await client.post("/graphql", json=body, headers=headers)
                    assert response.status_code == 200 and b'"errors"' not in response.content
            elapsed = time.perf_counter() - started
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    print(f"{name}: {elapsed / times * 1000:.1f} ms a request (wall, profiled)")


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2] if len(sys.argv) > 2 else "Q1",
            int(sys.argv[3]) if len(sys.argv) > 3 else 5,
        )
    )
