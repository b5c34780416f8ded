"""Close-after-response joins the response's background tasks and never replaces the user's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.requests import Request
from starlette.responses import Response

from sessionws import SessionRegistry
from sessionws_starlette import (
    REGISTRY_STATE_KEY,
    rotate_session_ws_id,
    schedule_close_all_session_ws,
    schedule_close_all_ws,
)
from tests._helpers import wait_for
from tests.core.helpers import RecordingConnection
from tests.starlette.apps import session_of

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def setup() -> AsyncIterator[tuple[Request, SessionRegistry, RecordingConnection, list[str]]]:
    async with SessionRegistry("memory://") as registry:
        connection = RecordingConnection()
        await registry.register(connection, ["id-1", "user:1"])
        request = Request(
            {
                "type": "http",
                "headers": [],
                "state": {REGISTRY_STATE_KEY: registry},
                "session": session_of({"sessionws_id": "id-1"}),
            }
        )
        yield request, registry, connection, []


async def test_a_response_without_background_gets_one() -> None:
    async with setup() as (request, _, connection, _events):
        response = Response()
        await schedule_close_all_session_ws(request, response, code=4000, reason="bye")
        assert isinstance(response.background, BackgroundTasks)
        assert connection.frames == []  # nothing happens before the response is sent
        await response.background()
        await wait_for(lambda: connection.close_code is not None)  # delivered by a drain task
        assert (connection.close_code, connection.close_reason) == (4000, "bye")


async def test_a_users_single_background_task_is_kept_and_runs_first() -> None:
    async with setup() as (request, _, connection, events):
        response = Response(background=BackgroundTask(events.append, "user task"))
        await schedule_close_all_session_ws(request, response)
        assert response.background is not None
        await response.background()
        assert events == ["user task"]
        await wait_for(lambda: connection.close_code is not None)  # delivered by a drain task
        assert connection.close_code == 1000


async def test_the_users_background_tasks_object_is_appended_to() -> None:
    async with setup() as (request, _, connection, events):
        tasks = BackgroundTasks()
        tasks.add_task(events.append, "first")
        response = Response(background=tasks)
        await schedule_close_all_ws(request, response, "user:1")
        assert response.background is tasks and len(tasks.tasks) == 2
        await tasks()
        await wait_for(lambda: connection.close_code is not None)  # delivered by a drain task
        assert events == ["first"] and connection.close_code == 1000


async def test_rotate_after_the_response_revokes_the_old_id_then() -> None:
    async with setup() as (request, registry, connection, _events):
        tasks = BackgroundTasks()
        new_id = await rotate_session_ws_id(request, tasks)
        assert new_id != "id-1" and request.session["sessionws_id"] == new_id
        assert not await registry.is_revoked("id-1")
        await tasks()
        assert await registry.is_revoked("id-1")
        await wait_for(lambda: connection.close_code is not None)  # delivered by a drain task
        assert (connection.close_code, connection.close_reason) == (1000, "session id rotated")


async def test_a_failing_close_after_the_response_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with setup() as (request, registry, _, _events):
        tasks = BackgroundTasks()
        await schedule_close_all_session_ws(request, tasks)
    # The registry has stopped: the close fails in the background, and is logged.
    await tasks()
    assert "the close-all scheduled after a response failed" in caplog.text
    assert not registry.running
