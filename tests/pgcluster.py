"""A PostgreSQL cluster of the test's own, on a spare port, for tests and benchmarks that restart or stop the
server: the shared server on 5432 serves other users and is never restarted or reconfigured.

Uses Debian's ``pg_createcluster`` / ``pg_ctlcluster`` / ``pg_dropcluster`` (root is needed, as in CI). On a
machine without PostgreSQL (``MEDIAMILL_TEST_POSTGRES_URL`` unset) the tests that need it skip with the reason;
where PostgreSQL is configured but a cluster cannot be created, they fail loudly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

SKIP_REASON = "MEDIAMILL_TEST_POSTGRES_URL is not set (PostgreSQL tests need a server)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _version() -> str:
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: int(v)) if os.path.isdir("/etc/postgresql") else []
    if not versions or not shutil.which("pg_createcluster"):
        raise RuntimeError("an own PostgreSQL cluster needs Debian's postgresql-common (pg_createcluster)")
    return versions[-1]


@dataclass(frozen=True)
class OwnCluster:
    """A running cluster: ``url`` is its ``postgres`` database (trust auth on 127.0.0.1)."""

    version: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, action: str, timeout: float = 120) -> None:
        """``start``, ``stop`` or ``restart`` the cluster (``stop`` uses fast shutdown)."""
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action]
        if action in ("stop", "restart"):
            cmd += ["-m", "fast"]
        subprocess.run(cmd, check=True, timeout=timeout, capture_output=True)

    def restart(self) -> None:
        self.ctl("restart")


@contextlib.contextmanager
def own_postgres_cluster(*settings: str) -> Iterator[OwnCluster]:
    """Create and start a throw-away cluster on a spare port; stop and drop it afterwards.

    ``settings`` are extra ``name=value`` server settings (e.g. ``"max_connections=200"``).
    """
    version = _version()
    cluster = OwnCluster(version=version, name=f"mm{uuid.uuid4().hex[:8]}", port=_free_port())
    options = [arg for s in settings for arg in ("-o", s)]
    cmd = ["pg_createcluster", version, cluster.name, "-p", str(cluster.port), "--start", *options,
           "--", "--auth=trust"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        subprocess.run(["pg_dropcluster", "--stop", version, cluster.name], capture_output=True, timeout=120)
        raise RuntimeError(f"pg_createcluster failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    try:
        yield cluster
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, cluster.name], capture_output=True, timeout=120)
