"""A fork server for kill tests: imports the SDK once, then forks one child per repetition.

Run as `python -m tests.faults.crashworker`; it reads one JSON command per line
on stdin and answers one JSON line per command on stdout. For each command it
forks a child that opens a device database and runs a scenario (sync or
upload). The child reports on a pipe each event id once track() has returned
(so it is durable), and "go" when it reaches the scenario's marker (and "committed" once a sync's transaction has
committed); the worker then waits `delay` seconds and sends the child SIGKILL,
wherever it is. With delay null the child runs to the end (for calibration).

Forking from a process that already imported numpy, onnxruntime and httpx is
what makes 50 repetitions per kill point affordable; the child opens its own
database and HTTP connections after the fork, so nothing is shared with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time

import httpx  # noqa: F401
import onnxruntime  # noqa: F401

import pocketrank.edge_runtime as edge_runtime  # noqa: F401  (imported before forking: that is the point)
from pocketrank.edge_runtime import EdgeClient
from pocketrank.edge_runtime.artifacts import ArtifactFiles


def child(cmd: dict, out: int) -> None:
    def say(line: str) -> None:
        os.write(out, (line + "\n").encode())

    client = EdgeClient(cmd["db"], cmd["key"], base_url=cmd["url"], device_id=cmd["device"], sync_timeout=10.0)
    for i, item in enumerate(cmd["track"]):
        say("event " + client.track(cmd["users"][i % len(cmd["users"])], "view", item))
    marker = cmd["marker"]
    if cmd["scenario"] == "sync":
        tx = client.cache.tx

        @contextlib.contextmanager
        def marked_tx(*a, **kw):  # the sync's one transaction: "go" (for apply) before, "committed" after
            first = not getattr(marked_tx, "seen", False)
            marked_tx.seen = True
            if first and marker == "apply":
                say("go")
            with tx(*a, **kw) as conn:
                yield conn
            if first:
                say("committed")

        client.cache.tx = marked_tx
    if marker == "swap":  # the new model file's write, fsync and rename, its load, the switch-over
        put = ArtifactFiles.put

        def marked_put(self, sha, data):
            if sha == cmd["ranker_sha"]:
                say("go")
            return put(self, sha, data)

        ArtifactFiles.put = marked_put
    if cmd["scenario"] == "sync":
        client.sync(cmd["users"])
    else:
        say("go")
        client.flush()
    say("done")


def run(cmd: dict) -> dict:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            child(cmd, w)
        except BaseException as exc:  # report, do not unwind into the worker's loop
            os.write(w, f"error {type(exc).__name__}: {exc}\n".encode())
            code = 1
        os._exit(code)
    os.close(w)
    events, went, done, error, go_at, done_at, commit_at = [], False, False, None, None, None, None
    buf = b""
    with os.fdopen(r, "rb", buffering=0) as pipe:
        while True:
            chunk = pipe.read(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode()
                if text.startswith("event "):
                    events.append(text[6:])
                elif text == "go" and not went:
                    went, go_at = True, time.perf_counter()
                    if cmd["delay"] is not None:
                        time.sleep(cmd["delay"])
                        os.kill(pid, signal.SIGKILL)
                elif text == "committed":
                    commit_at = time.perf_counter()
                elif text == "done":
                    done, done_at = True, time.perf_counter()
                elif text.startswith("error "):
                    error = text[6:]
    _, status = os.waitpid(pid, 0)
    return {"events": events, "went": went, "done": done, "error": error,
            "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
            "go_to_done": (done_at - go_at) if (done_at and go_at) else None,
            "go_to_commit": (commit_at - go_at) if (commit_at and go_at) else None}


def main() -> None:
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
