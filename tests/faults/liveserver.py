"""The real Flask app served over real HTTP on a loopback port, from a thread of the test process.

In-process so that tests can also read the server's store directly (to count
what arrived), yet every byte the SDK sends crosses a socket.
"""

from __future__ import annotations

import threading
from pathlib import Path

from werkzeug.serving import make_server


class LiveServer:
    def __init__(self, home: Path, **settings):
        from pocketrank.server.api.app import create_app
        from pocketrank.server.config import Config

        # `settings`: Config fields (sync_rate=0: a test syncing faster than a phone may). The environment is not
        # read: a POCKETRANK_SYNC_RATE set here once had no effect, and a kill loop on a quiet machine hit 429s.
        self.app = create_app(Config(home=Path(home), **settings))
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def store(self):
        return self.app.extensions["pocketrank"].store

    def event_counts(self, event_ids: list[str]) -> dict[str, int]:
        """How many times each event id is in the server's event log."""
        counts = dict.fromkeys(event_ids, 0)
        for i in range(0, len(event_ids), 500):
            part = event_ids[i : i + 500]
            rows = self.store.db.execute(
                f"SELECT event_id, COUNT(*) FROM events WHERE event_id IN ({','.join('?' * len(part))}) "
                "GROUP BY event_id", part).fetchall()
            counts.update(dict(rows))
        return counts

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
