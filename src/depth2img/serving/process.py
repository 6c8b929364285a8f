"""Run ``depth2img-serve`` as a subprocess and wait until it listens (tests and benchmarks).

>>> with ServerProcess(["--model", "shipped", "--quiet"]) as server:
...     requests.get(server.url + "/healthz")

The server is started with ``--port 0`` (the OS picks a free port, no race between choosing and
binding) and prints ``depth2img-serve: listening on http://HOST:PORT`` once the model is loaded
and the socket is bound; this class reads that line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque

LISTENING = re.compile(r"depth2img-serve: listening on (http://\S+)")


class ServerProcess:
    """A ``depth2img-serve`` child process.

    Args:
        args: extra command-line arguments (``--model ...``); ``--port 0`` is added unless a
            port is given.
        env: environment (default: this process's, with one torch thread per core).
        startup_timeout_s: how long model loading + binding may take.
    """

    def __init__(self, args: list[str], env: dict | None = None, startup_timeout_s: float = 180):
        command = [sys.executable, "-m", "depth2img.cli.serve", *args]
        if "--port" not in args:
            command += ["--port", "0"]
        self.output: deque[str] = deque(maxlen=400)  # last lines of the server's log
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env if env is not None else os.environ.copy(),
        )
        self.url = self._wait_listening(startup_timeout_s)
        # keep draining the pipe so a chatty server never blocks on a full pipe
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        found: list[str] = []

        def read():
            for line in self.proc.stdout:
                self.output.append(line.rstrip())
                match = LISTENING.search(line)
                if match:
                    found.append(match.group(1))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(max(0.0, deadline - time.monotonic()))
        if not found:
            self.stop()
            log = "\n".join(self.output)
            raise RuntimeError(
                f"depth2img-serve did not start (exit {self.proc.returncode}):\n{log}"
            )
        return found[0]

    def _read_rest(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line.rstrip())

    def log(self) -> str:
        return "\n".join(self.output)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 15) -> int | None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
