"""The harness itself: each test gets its own empty database; the sink answers as scripted."""

from __future__ import annotations

import asyncpg
import httpx

from tests.support.sink import Reply, Sink


async def test_each_test_gets_a_clean_database(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("select count(*) from pg_tables where schemaname = 'public'") == 0
        await conn.execute("create table left_behind (id int)")
        assert await conn.fetchval("select current_setting('server_version_num')::int") >= 150000
    finally:
        await conn.close()


async def test_databases_are_not_shared(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("select to_regclass('public.left_behind')") is None
    finally:
        await conn.close()


async def test_sink_records_and_answers_as_scripted(sink: Sink) -> None:
    sink.script("/hook", Reply(status=503, headers={"retry-after": "1"}))
    async with httpx.AsyncClient() as client:
        first = await client.post(sink.url("/hook"), content=b'{"a":1}', headers={"webhook-id": "x"})
        second = await client.post(sink.url("/hook"), content=b"{}")
    assert (first.status_code, first.headers["retry-after"]) == (503, "1")
    assert second.status_code == 200
    await sink.wait_for(lambda reqs: len(reqs) == 2, within=2)
    assert sink.at("/hook")[0].body == b'{"a":1}'
    assert sink.at("/hook")[0].headers["webhook-id"] == "x"
