"""Runs the documentation's commands fast: one process imports torch and sknet once and forks a child per
command (`sknet ...`, `python script.py ...`, `python -m module ...`), so that each of the many commands
of README.md and docs/*.md costs its own work, not the seconds of importing torch again.

    python tests/docs_runner.py serve SOCKET      # the server (tests/test_docs.py starts it)
    python tests/docs_runner.py --as sknet ARGS   # a client (no torch import): the shims `sknet`, `python`

The client passes its argv, working directory, environment and standard streams (the file descriptors
themselves) to the server; the forked child runs the command there and sends back its exit status.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import runpy
import signal
import socket
import struct
import sys


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, ancdata, _flags, _addr = conn.recvmsg(1 << 20, socket.CMSG_SPACE(3 * array.array("i").itemsize))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", payload[: len(payload) - len(payload) % 4]).tolist()
    return json.loads(data), fds


def _run(request: dict) -> int:
    argv = request["argv"]
    sys.argv = argv[1:] if argv[0] == "python" else ["sknet", *argv[1:]]
    try:
        if argv[0] == "sknet":
            import sknet_launch

            return sknet_launch.main() or 0
        if len(argv) > 2 and argv[1] == "-m":
            sys.argv = [argv[2], *argv[3:]]
            runpy.run_module(argv[2], run_name="__main__", alter_sys=True)
        elif len(argv) > 2 and argv[1] == "-c":
            sys.argv = ["-c", *argv[3:]]
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[1])))
            runpy.run_path(argv[1], run_name="__main__")
        return 0
    except SystemExit as stop:
        code = stop.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1


def _child(conn: socket.socket) -> None:
    status = 1
    try:
        request, fds = _receive(conn)
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            status = _run(request)
        except BaseException:
            import traceback

            traceback.print_exc()
            status = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing to flush
                stream.flush()
        try:
            conn.sendall(struct.pack("!i", status))
        finally:
            os._exit(0)


def serve(path: str) -> None:
    import torch  # noqa: F401 (imported once, before any fork; no tensor op runs here)

    import sknet
    import sknet.cli.main  # noqa: F401 (the command's modules)
    import sknet_launch  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped by the system
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = server.accept()
        if os.fork() == 0:
            server.close()
            _child(conn)
        conn.close()


def client(name: str, args: list[str]) -> int:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(os.environ["SKNET_DOCS_SOCKET"])
    request = json.dumps({"argv": [name, *args], "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
    conn.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    reply = b""
    while len(reply) < 4:
        chunk = conn.recv(4 - len(reply))
        if not chunk:
            return 1
        reply += chunk
    return struct.unpack("!i", reply)[0]


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2])
    else:  # a shim on PATH runs `docs_runner.py --as NAME ARGS...`
        sys.exit(client(sys.argv[2], sys.argv[3:]))
