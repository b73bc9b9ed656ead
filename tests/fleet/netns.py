"""A fleet on one machine: hosts as network namespaces on a bridge, one PostgreSQL cluster and one S3 server.

Used by the fleet test (tests/fleet/test_fleet_netns.py) and the fleet benchmark (benchmarks/fleet.py)::

    with netns_fleet(work, worker_hosts=3, api_hosts=2, settings={"lease_seconds": 5}) as fleet:
        fleet.start_workers()             # `mediamill worker --pool '*=2'` in each worker namespace
        fleet.cut(fleet.worker_hosts[0])  # `ip link set <veth> down` inside the namespace

The layout: a bridge in the root namespace holds ``10.231.N.1/24`` (``N`` picked free per fleet); each host is a
namespace with one end of a veth pair (``10.231.N.10+i``), the other end on the bridge. PostgreSQL (a cluster of
the fleet's own on a spare port, listening on loopback and the bridge address) and moto's S3 server run in the root
namespace on the bridge address; `mediamill api` replicas and `mediamill worker` processes run inside the
namespaces and reach both only over the bridge, so cutting a host's link cuts it off as a pulled cable would.

Everything is torn down on the way out, failures included: processes (their whole process groups), namespaces,
the bridge, the S3 server and the cluster. Creating namespaces needs root (CI runs as root);
:func:`unavailable_reason` says why a fleet cannot be built here.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
#: every interface and namespace of a fleet starts with this, then a per-fleet tag
PREFIX = "mmfl"
#: the install key every process of the fleet shares (a real fleet must share it)
SECRET_KEY = "fleet-netns-install-key-0123456789abcdef"
BUCKET = "mediamill-fleet"
API_PORT = 8000
METRICS_PORT = 9100


def unavailable_reason() -> str | None:
    """Why a namespace fleet cannot run on this machine (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces, veth pairs and an own PostgreSQL cluster need root (CI runs as root)"
    for tool in ("ip", "pg_createcluster", "pg_ctlcluster", "pg_dropcluster"):
        if not shutil.which(tool):
            return f"the fleet needs `{tool}` on the PATH"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _free_subnet() -> int:
    """A third octet ``N`` with no address of 10.231.N.0/24 on the machine (other fleets may run beside us)."""
    used = _ip("-o", "-4", "addr", "show").stdout + _ip("-4", "route", "show").stdout
    for n in random.sample(range(1, 255), 254):
        if f"10.231.{n}." not in used:
            return n
    raise RuntimeError("no free 10.231.N.0/24 subnet")


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Host:
    """A namespace on the bridge: ``veth`` is its end of the pair (inside), ``peer`` the bridge end."""

    name: str
    namespace: str
    address: str
    veth: str
    peer: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


class Network:
    """A bridge and one namespace per host; :meth:`close` removes all of it (safe to call twice)."""

    def __init__(self, host_names: list[str]) -> None:
        self.tag = f"{PREFIX}{uuid.uuid4().hex[:4]}"
        self.octet = _free_subnet()
        self.bridge = f"{self.tag}br"
        self.gateway = f"10.231.{self.octet}.1"
        self.hosts: dict[str, Host] = {}
        self._names = host_names

    def open(self) -> Network:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self._names):
            host = Host(name=name, namespace=f"{self.tag}-{name}", address=f"10.231.{self.octet}.{10 + i}",
                        veth=f"{self.tag}h{i}", peer=f"{self.tag}b{i}")
            _ip("netns", "add", host.namespace)
            self.hosts[name] = host
            _ip("link", "add", host.peer, "type", "veth", "peer", "name", host.veth)
            _ip("link", "set", host.veth, "netns", host.namespace)
            _ip("link", "set", host.peer, "master", self.bridge, "up")
            ns = ["netns", "exec", host.namespace, "ip"]
            _ip(*ns, "addr", "add", f"{host.address}/24", "dev", host.veth)
            _ip(*ns, "link", "set", host.veth, "up")
            _ip(*ns, "link", "set", "lo", "up")
        return self

    def cut(self, host: Host) -> None:
        """Pull the host's cable: its end of the veth pair goes down inside its namespace."""
        _ip("netns", "exec", host.namespace, "ip", "link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        _ip("netns", "exec", host.namespace, "ip", "link", "set", host.veth, "up")

    def close(self) -> None:
        for host in self.hosts.values():  # deleting a namespace deletes its veth end and with it the pair
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.peer, check=False)
        _ip("link", "del", self.bridge, check=False)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this fleet still present (empty after :meth:`close`)."""
        names = _ip("netns", "list").stdout + _ip("-o", "link", "show").stdout
        return sorted({word.split("@")[0].rstrip(":") for word in names.split() if word.startswith(self.tag)})


# ------------------------------------------------------------------------------ PostgreSQL
@dataclass
class Cluster:
    """The fleet's own cluster: ``url`` for the fleet (bridge address), ``local_url`` from the root namespace."""

    version: str
    name: str
    port: int
    gateway: str
    database: str = "mediamill"

    @property
    def config_dir(self) -> Path:
        return Path("/etc/postgresql") / self.version / self.name

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.gateway}:{self.port}/{self.database}"

    @property
    def local_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def postmaster_pid(self) -> int:
        data = Path("/var/lib/postgresql") / self.version / self.name / "postmaster.pid"
        return int(data.read_text().split()[0])


@contextlib.contextmanager
def fleet_cluster(gateway: str, *settings: str) -> Iterator[Cluster]:
    """A cluster listening on loopback and ``gateway``, trusting the fleet's /24, with pg_stat_statements."""
    from tests.pgcluster import own_postgres_cluster

    base = (f"listen_addresses=127.0.0.1,{gateway}", "max_connections=300",
            "shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all", *settings)
    with own_postgres_cluster(*base) as own:
        cluster = Cluster(version=own.version, name=own.name, port=own.port, gateway=gateway)
        subnet = gateway.rsplit(".", 1)[0] + ".0/24"
        with (cluster.config_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"\nhost all all {subnet} trust\n")
        own.ctl("reload")
        _psql(cluster.admin_url(), f"CREATE DATABASE {cluster.database}")
        _psql(cluster.local_url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        yield cluster


def _psql(url: str, sql: str) -> str:
    done = subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"psql failed: {done.stderr.strip()}")
    return done.stdout.strip()


# ------------------------------------------------------------------------------ processes
def _stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL the whole process group (a worker's step children too)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_http(url: str, timeout: float = 90, proc: subprocess.Popen[bytes] | None = None,
              log: Path | None = None) -> None:
    """Wait until ``url`` answers 200; fail early (with the log's tail) when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered:\n{tail}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 within {timeout} s")


@dataclass
class Fleet:
    """A running fleet. Worker processes are started and stopped by the caller; API replicas run throughout."""

    work: Path
    net: Network
    cluster: Cluster
    s3_endpoint: str
    settings: dict[str, Any]
    worker_hosts: list[Host]
    api_hosts: list[Host]
    api_key: str = ""
    apis: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_ids: dict[str, str] = field(default_factory=dict)  # host name -> the worker id of its last start

    # ---------------------------------------------------------------- environment
    def env(self, host: Host, **extra: Any) -> dict[str, str]:
        """The environment of a `mediamill` process on ``host`` (settings as MEDIAMILL_*)."""
        env = {**os.environ, "MEDIAMILL_DATA_DIR": str(self.work / host.name),
               "MEDIAMILL_DATABASE_URL": self.cluster.url, "MEDIAMILL_SECRET_KEY": SECRET_KEY,
               "MEDIAMILL_STORAGE_URL": f"s3://{BUCKET}/fleet", "MEDIAMILL_METRICS_HOST": host.address,
               "MEDIAMILL_LOG_FORMAT": "json", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1",
               **s3_env(self.s3_endpoint),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT),
                                                           os.environ.get("PYTHONPATH", "")]))}
        env.update({f"MEDIAMILL_{k.upper()}": str(v) for k, v in {**self.settings, **extra}.items()})
        return env

    def _spawn(self, host: Host, log_name: str, args: list[str], **extra: Any) -> subprocess.Popen[bytes]:
        folder = self.work / host.name
        folder.mkdir(parents=True, exist_ok=True)
        # `ip netns exec` execs the command: the Popen's pid is mediamill's own
        with (folder / f"{log_name}.log").open("ab") as out:
            return subprocess.Popen([*host.exec_prefix(), sys.executable, "-m", "mediamill.cli.main", *args],
                                    env=self.env(host, **extra), cwd=str(folder), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, host: Host, log_name: str) -> str:
        path = self.work / host.name / f"{log_name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ---------------------------------------------------------------- API replicas
    @property
    def api_urls(self) -> list[str]:
        return [f"http://{h.address}:{API_PORT}" for h in self.api_hosts]

    def start_apis(self) -> None:
        for host in self.api_hosts:
            self.apis[host.name] = self._spawn(host, "api", ["api", "--no-migrate", "--host", host.address,
                                                             "--port", str(API_PORT)])
        for host, url in zip(self.api_hosts, self.api_urls, strict=True):
            wait_http(f"{url}/healthz", proc=self.apis[host.name], log=self.work / host.name / "api.log")

    # ---------------------------------------------------------------- workers
    def metrics_url(self, host: Host) -> str:
        return f"http://{host.address}:{METRICS_PORT}/metrics"

    def start_workers(self, count: int | None = None, pool: str = "*=2", **settings: Any) -> None:
        """`mediamill worker --pool POOL --metrics-port 9100` on the first ``count`` worker hosts (``settings``
        as MEDIAMILL_* on top of the fleet's)."""
        hosts = self.worker_hosts[:count] if count is not None else self.worker_hosts
        for host in hosts:
            self.workers[host.name] = self._spawn(host, "worker", [
                "worker", "--no-migrate", "--pool", pool, "--name", host.name,
                "--metrics-port", str(METRICS_PORT)], **settings)
        for host in hosts:
            wait_http(f"http://{host.address}:{METRICS_PORT}/healthz", proc=self.workers[host.name],
                      log=self.work / host.name / "worker.log")
            self.worker_ids[host.name] = str(httpx.get(f"http://{host.address}:{METRICS_PORT}/healthz",
                                                       timeout=5).json()["worker"])

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            _stop(proc)
        self.workers.clear()

    def cut(self, host: Host) -> None:
        self.net.cut(host)

    def restore(self, host: Host) -> None:
        self.net.restore(host)

    # ---------------------------------------------------------------- API calls
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def upload(self, data: bytes, api: int = 0) -> str:
        """A one-request tus upload through replica ``api``; the upload id."""
        res = httpx.post(f"{self.api_urls[api]}/v1/uploads", content=data, timeout=60, headers={
            **self.headers(), "Tus-Resumable": "1.0.0", "Upload-Length": str(len(data)),
            "Content-Type": "application/offset+octet-stream"})
        res.raise_for_status()
        return str(res.headers["location"].rsplit("/", 1)[1])

    def submit(self, upload_id: str, workflow: str, count: int) -> list[int]:
        """``count`` jobs on one stored upload, alternating between the API replicas; their ids."""
        ids: list[int] = []
        clients = [httpx.Client(base_url=url, timeout=60, headers=self.headers()) for url in self.api_urls]
        try:
            for i in range(count):
                res = clients[i % len(clients)].post("/v1/jobs", json={"upload_id": upload_id,
                                                                       "workflow": workflow})
                res.raise_for_status()
                ids.append(int(res.json()["id"]))
        finally:
            for c in clients:
                c.close()
        return ids

    # ---------------------------------------------------------------- teardown
    def close(self) -> None:
        for proc in [*self.workers.values(), *self.apis.values()]:
            _stop(proc)
        self.workers.clear()
        self.apis.clear()


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "fleet", "AWS_SECRET_ACCESS_KEY": "fleet-secret",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="fleet",
                        aws_secret_access_key="fleet-secret")


@contextlib.contextmanager
def s3_server(address: str, log: Path) -> Iterator[str]:
    """moto's S3 server on ``address`` (a process of its own) with the fleet's bucket; yields its endpoint."""
    port = free_port(address)
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", address, "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://{address}:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                s3_client(endpoint).create_bucket(Bucket=BUCKET)
                break
            except Exception:  # the server is still starting
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        _stop(proc)


def _prepare(cluster: Cluster, work: Path, workflows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """Migrate once (as a migrate job would), install ``workflows``; an admin API key."""
    from mediamill.config import Settings
    from mediamill.runtime import Runtime
    from mediamill.store import auth_repo, workflow_repo
    from mediamill.workflows.loader import validate_document

    rt = Runtime(Settings(data_dir=work / "migrate", database_url=cluster.local_url, secret_key=SECRET_KEY,
                          storage_url=str(work / "migrate" / "storage"), **settings))
    try:
        rt.prepare()
        with rt.engine.begin() as conn:
            for doc in workflows:
                workflow_repo.save_version(conn, validate_document(doc), author="fleet")
        return auth_repo.create_key(rt.engine, role="admin", name="fleet").plaintext
    finally:
        rt.close()


@contextlib.contextmanager
def netns_fleet(work: Path, *, worker_hosts: int = 3, api_hosts: int = 2, workflows: list[dict[str, Any]],
                settings: dict[str, Any] | None = None) -> Iterator[Fleet]:
    """Build the whole fleet (network, cluster, S3, migrated schema, API replicas); tear it all down after.

    Workers are not started: call :meth:`Fleet.start_workers`.
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    names = [f"w{i + 1}" for i in range(worker_hosts)] + [f"a{i + 1}" for i in range(api_hosts)]
    net = Network(names)
    settings = dict(settings or {})
    with contextlib.ExitStack() as stack:
        stack.callback(net.close)
        net.open()
        cluster = stack.enter_context(fleet_cluster(net.gateway))
        work.mkdir(parents=True, exist_ok=True)
        endpoint = stack.enter_context(s3_server(net.gateway, work / "s3.log"))
        fleet = Fleet(work=work, net=net, cluster=cluster, s3_endpoint=endpoint, settings=settings,
                      worker_hosts=[net.hosts[n] for n in names[:worker_hosts]],
                      api_hosts=[net.hosts[n] for n in names[worker_hosts:]])
        stack.callback(fleet.close)
        fleet.api_key = _prepare(cluster, work, workflows, {k: v for k, v in settings.items()
                                                            if k in ("lease_seconds",)})
        fleet.start_apis()
        yield fleet
