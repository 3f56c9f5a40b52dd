"""Throwaway servers for tests: a PostgreSQL cluster and an MLflow tracking server on it.

Both listen on a free 127.0.0.1 port and are removed after the test. Tests that need them take
the fixtures by importing them (`from servers import postgres`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL on a free 127.0.0.1 port; yields its URL and removes it after."""
    pg = _pg_bin()
    if pg is None:
        pytest.skip("no PostgreSQL server binaries (pg_ctl/initdb; Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg2", reason="psycopg2 is needed to reach PostgreSQL (pip install psycopg2-binary)")
    # initdb refuses to run as root: run the server as the postgres user then.
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as (initdb refuses root)")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="cxrlab-pg-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    data = root / "data"
    run = lambda *a: subprocess.run([*prefix, *map(str, a)], check=True, capture_output=True)  # noqa: E731
    run(pg / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    run(pg / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url`; returns its URL."""
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def mlflow_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port: its own PostgreSQL database as backend
    store (MLflow and Optuna both keep an alembic_version table) and artifacts proxied into a
    temp folder. Yields its http:// URI."""
    backend = create_database(postgres, "mlflow").replace("postgresql://", "postgresql+psycopg2://")
    artifacts = tmp_path_factory.mktemp("mlartifacts")
    port = free_port()
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "wb")
    # The store URI travels in the environment, as it would with a password in it (never argv).
    env = os.environ | {"MLFLOW_BACKEND_STORE_URI": backend}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--artifacts-destination", str(artifacts),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                tail = (artifacts.parent / f"mlflow-server-{port}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mlflow server did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield uri
    finally:
        # The server and its uvicorn worker, at once: a throwaway server has nothing to flush,
        # and a graceful stop waited 20 s for idle keep-alive connections.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
