"""``GET /events/{event_id}/snapshot.jpg``: the best snapshot of the track an event belongs to.

Any event id of a track finds its snapshot (the id is ``<track key>-<n>``). Read from the
bounded store in STATE_DIR/snapshots in an executor (a disk read must not hold up the loop);
404 once the store has dropped it or when the track never had a clear view.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from edge_agent.agent.web.responses import json_response
from edge_agent.pipelines.events.snapshots import SnapshotStore

if TYPE_CHECKING:
    from edge_agent.agent.supervisor import Supervisor


def add_event_routes(app: web.Application, supervisor: Supervisor) -> None:
    async def snapshot(request: web.Request) -> web.Response:
        event_id = request.match_info["event_id"]
        key = SnapshotStore.key_of(event_id)
        step = supervisor.tracking
        store = step.snapshots if step is not None else None
        if key is None or store is None:
            return json_response({"error": f"no snapshot for event {event_id!r}"}, status=404)
        data = await asyncio.get_running_loop().run_in_executor(None, store.get, key)
        if data is None:
            return json_response({"error": f"no snapshot for event {event_id!r} (none taken, or dropped)"}, status=404)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-cache"})

    app.router.add_get(r"/events/{event_id}/snapshot.jpg", snapshot)


__all__ = ["add_event_routes"]
