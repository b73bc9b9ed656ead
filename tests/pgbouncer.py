"""A PgBouncer of the test's own in transaction pooling mode, on a spare port, in front of one database.

Debian's ``pgbouncer`` binary (CI installs it); the system service is never used. The instance gets a config
file in a temporary folder, ``pool_mode = transaction`` and a small server pool (so consecutive transactions of
one client land on different server sessions, as in production), and is stopped afterwards. PgBouncer refuses
to run as root: as root it is started with ``-u postgres``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

SKIP_REASON = "the pgbouncer binary is not installed (apt-get install pgbouncer)"


def _binary() -> str | None:
    found = shutil.which("pgbouncer")
    if found is None and os.access("/usr/sbin/pgbouncer", os.X_OK):  # Debian's; /usr/sbin may be off the PATH
        found = "/usr/sbin/pgbouncer"
    return found


def available() -> bool:
    return _binary() is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def pgbouncer(database_url: str, *, pool_size: int = 2) -> Iterator[str]:
    """Run PgBouncer in front of ``database_url`` (trust auth); yields the URL that goes through it."""
    target = sa.engine.make_url(database_url)
    port = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="mm-pgbouncer-"))
    run_as = ["-u", "postgres"] if os.geteuid() == 0 else []
    try:
        user = target.username or "postgres"
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        (folder / "pgbouncer.ini").write_text(f"""[databases]
{target.database} = host={target.host or '127.0.0.1'} port={target.port or 5432} dbname={target.database}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'users.txt'}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
server_reset_query =
logfile = {folder / 'pgbouncer.log'}
pidfile = {folder / 'pgbouncer.pid'}
""")
        if run_as:  # the dropped-privileges process reads the config and writes its log and pid file here
            ids = pwd.getpwnam("postgres")
            os.chown(folder, ids.pw_uid, ids.pw_gid)
            for f in folder.iterdir():
                os.chown(f, ids.pw_uid, ids.pw_gid)
        proc = subprocess.Popen([_binary() or "pgbouncer", *run_as, str(folder / "pgbouncer.ini")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"pgbouncer did not start: {err[-1000:]}")
                time.sleep(0.05)
            yield target.set(port=port, host="127.0.0.1").render_as_string(hide_password=False)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
