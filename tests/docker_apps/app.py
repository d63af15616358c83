"""A small shop backend (the ophion-test/python-app image, tests/docker_images.py): Flask's own
server on 127.0.0.1:$PORT."""

import logging
import os
import signal
import sys
import time

from flask import Flask

app = Flask(__name__)
log = logging.getLogger("shop")


@app.get("/")
def index():
    return "ok"


@app.get("/work")
def work():
    started = time.perf_counter()
    total = sum(i * i for i in range(20_000))
    log.warning("worked out total=%d", total)
    return {"total": total, "ms": round((time.perf_counter() - started) * 1000, 3)}


def stop(signum, frame):
    # As PID 1 the process gets no default SIGTERM action: exit so `docker stop` is quick and
    # atexit handlers (an SDK flushing its telemetry) run.
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop)
    app.run(host="127.0.0.1", port=int(os.environ["PORT"]), threaded=True)
