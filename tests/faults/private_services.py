"""PostgreSQL, NATS JetStream and Redis of the fault tests' own, on free ports and temporary
directories, so they can be killed (-9) and restarted without touching the machine's shared
services (5432 / 4222 / 6379), which the rest of the suite uses."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

SHARED_PORTS = frozenset({4222, 5432, 6379, 8222})  # the machine's services: never ours


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in SHARED_PORTS:
            return port


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy; AssertionError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid: int) -> list[int]:
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().split(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.split("/")[2]))
    return found


def find_binary(name: str, candidates: tuple[str, ...] = ()) -> str | None:
    for path in (*candidates, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    return None


def postgres_bindir() -> str | None:
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(versions[-1]) if versions else None


class PrivatePostgres:
    """A cluster initdb'd into a temporary directory. As root it runs as the `postgres` OS user
    (PostgreSQL refuses root), in a directory that user owns."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="orderhub-faults-pg-"))  # not pytest's tmp: postgres must traverse it
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> None:
        subprocess.run([*self._as_postgres, *args], check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run(f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        wait_until(self._answers, 30, "private PostgreSQL answering")

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def kill9(self) -> int:
        """SIGKILL the postmaster and every backend (a crash: no shutdown checkpoint); returns the postmaster's pid."""
        pid = self.postmaster_pid()
        assert pid is not None and _alive(pid), "private PostgreSQL is not running"
        victims = [pid, *_children(pid)]
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not any(_alive(v) for v in victims), 30, "killed PostgreSQL processes gone")
        return pid

    def ensure_running(self) -> None:
        """After a test that failed between a kill and its restart: the next test finds it up."""
        if not self._answers():
            self.start()

    def stop(self) -> None:
        if self.postmaster_pid() is not None and _alive(self.postmaster_pid() or 0):
            try:
                self._run(f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
            except subprocess.SubprocessError:
                self.kill9()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def admin_dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


class PrivateDaemon:
    """A server process on a fixed free port and data directory; `kill9` then `start` brings it
    back on the SAME port and directory (what it persisted is what it finds)."""

    name = "daemon"

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = root / f"{self.name}-{self.port}"
        self.dir.mkdir(parents=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def args(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        return port_open(self.port)

    def start(self) -> None:
        self.starts += 1
        log = (self.dir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(lambda: self.ready() or self.proc.poll() is not None, 30, f"private {self.name} on port {self.port}")
        assert self.proc.poll() is None, f"private {self.name} exited: {self.log_tail()}"

    def kill9(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, f"private {self.name} is not running"
        pid = self.proc.pid
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        return pid

    def ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.dir / f"{self.name}.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PrivateNats(PrivateDaemon):
    name = "nats"

    def args(self) -> list[str]:
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir / "jetstream")]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class PrivateRedis(PrivateDaemon):
    name = "redis"

    def args(self) -> list[str]:
        # every write fsynced to the append-only file before Redis answers: the raw messages survive a kill -9
        return [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir), "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--daemonize", "no"]

    def ready(self) -> bool:
        try:  # listening is not enough: Redis answers LOADING while it replays the AOF
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"
