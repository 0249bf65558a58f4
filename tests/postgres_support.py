"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster made by initdb in a temporary
folder, started on a free port of 127.0.0.1 and stopped (and removed) when the tests end. initdb refuses to run as
root, so as root the cluster belongs to the `postgres` account (the Debian package makes it), else to `nobody`.

`make test` installs the package (system-deps); without it the PostgreSQL tests skip with that reason, except
under CI=true, where a missing server is a failure rather than a silently smaller suite (conftest's fixture).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)  # the newest version first


def postgres_bin(name: str) -> Path | None:
    for folder in BIN_DIRS:
        if (folder / name).exists():
            return folder / name
    found = shutil.which(name)
    return Path(found) if found else None


class PostgresMissing(RuntimeError):
    """Debian's postgresql binaries are not on this machine."""


def _cluster_user() -> str | None:
    """The account the cluster runs as: None for the current (non-root) user."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a `postgres` nor a `nobody` account to run PostgreSQL as")


def _as(user: str | None, command: list[str]) -> list[str]:
    return command if user is None else ["runuser", "-u", user, "--", *command]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster; yields the URL of its `postgres` database (user `postgres`, no
    password, 127.0.0.1 only)."""
    initdb, pg_ctl = postgres_bin("initdb"), postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise PostgresMissing("PostgreSQL is not installed: `apt-get install -y postgresql` (make test does it)")
    user = _cluster_user()
    home = Path(tempfile.mkdtemp(prefix="defect-pg-"))
    data = home / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    port = _free_port()
    log = home / "server.log"
    subprocess.run(_as(user, [str(initdb), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
                              "-E", "UTF8", "--locale=C"]), check=True, capture_output=True)
    options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run(_as(user, [str(pg_ctl), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                              "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as(user, [str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the test server; returns its URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + "/" + name

