"""PostgreSQL over TLS and with a password, as a managed database asks: a server of its own that
takes TCP only over TLS with a scram-sha-256 password (its certificate signed by a CA made with
openssl). The URL's libpq parameters (`sslmode=verify-full`, `sslrootcert`) and the password from
`FCL_DATABASE_PASSWORD_FILE` hold for every kind of connection of fcl: the migrations, the
SQLAlchemy pool, the LISTEN connection and the training child's sample loader. A wrong CA, no TLS
and no password are each refused."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from fcl.contract.settings import Settings
from fcl.stack.common import free_port
from fcl.stack.postgres import DATABASE, ROLE, PostgresServer, ServerSecurity, find_bindir
from fcl.stack.tls import issue, make_ca
from fcl.storage.datasets import load_samples
from fcl.storage.db import Database
from fcl.storage.errors import StorageError
from fcl.storage.migrate import head, upgrade
from fcl.storage.notifications import Notifications
from tests.conftest import ROOT

FCL = str(ROOT / ".venv" / "bin" / "fcl")
pytestmark = pytest.mark.xdist_group("postgres_tls")


@dataclass(frozen=True)
class TlsDatabase:
    port: int
    ca: Path
    other_ca: Path
    password: str
    password_file: Path

    def url(self, **params: str) -> str:
        query = {"sslmode": "verify-full", "sslrootcert": str(self.ca)} | params
        return f"postgresql+asyncpg://{ROLE}@127.0.0.1:{self.port}/{DATABASE}?" + "&".join(
            f"{k}={v}" for k, v in query.items()
        )


@pytest.fixture(scope="session")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDatabase]:
    root = tmp_path_factory.mktemp("pg-tls")
    ca = make_ca(root / "ca")
    cert = issue(ca, root / "ca", "postgres")
    password = secrets.token_urlsafe(18)
    password_file = root / "db-password"
    password_file.touch(mode=0o600)
    password_file.write_text(password + "\n")
    bindir, port = find_bindir(), free_port()
    server = PostgresServer(root / "stack", security=ServerSecurity(cert=cert.cert, key=cert.key, password=password))
    server.start(bindir, port, 60)
    try:
        yield TlsDatabase(port, ca.cert, make_ca(root / "other").cert, password, password_file)
    finally:
        server.stop(bindir)


def settings_for(db: TlsDatabase, url: str) -> Settings:
    return Settings(_env_file=None, database_url=url, database_password_file=db.password_file)


async def test_every_kind_of_connection_goes_over_tls_with_the_password_from_its_file(tls_db: TlsDatabase) -> None:
    settings = settings_for(tls_db, tls_db.url())
    await asyncio.to_thread(upgrade, settings.database_url)  # the migrations' engine
    db = Database(settings.database_url, pool_size=2)  # the services' pool
    notifications = Notifications(settings.database_url)  # the LISTEN connection
    connected = asyncio.Event()
    notifications.on_connect(connected.set)
    notifications.start()
    try:
        await asyncio.wait_for(connected.wait(), 30)
        async with db.transaction() as session:
            version = await session.scalar(text("SELECT version_num FROM alembic_version"))
            own = await session.scalar(text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
            tcp = (
                await session.execute(
                    text(
                        "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                        "WHERE a.client_addr IS NOT NULL AND a.datname = :db"
                    ),
                    {"db": DATABASE},
                )
            ).all()
        assert version == head() and own is True
        assert len(tcp) >= 2 and all(ssl for ssl, _ in tcp), tcp  # this session and the listener
        assert all(str(v).startswith("TLSv1.") for _, v in tcp)
        # the training child's loader opens a connection of its own
        assert await load_samples(settings.database_url, "no-such-dataset", up_to=10) == []
    finally:
        await notifications.stop()
        await db.close()


@pytest.mark.parametrize(
    ("params", "password_from_file", "said"),
    [
        ({"sslrootcert": "OTHER"}, True, "certificate verify failed"),
        ({"sslmode": "disable"}, True, "no encryption"),
        ({}, False, "password"),
    ],
    ids=["a CA that did not sign it", "no TLS", "no password"],
)
async def test_what_the_server_does_not_trust_is_refused(
    tls_db: TlsDatabase, params: dict[str, str], password_from_file: bool, said: str
) -> None:
    params = {k: (str(tls_db.other_ca) if v == "OTHER" else v) for k, v in params.items()}
    url = tls_db.url(**params)
    settings = settings_for(tls_db, url) if password_from_file else Settings(_env_file=None, database_url=url)
    db = Database(settings.database_url, pool_size=1)
    try:
        with pytest.raises(StorageError) as refused:
            async with db.transaction() as session:
                await session.execute(text("SELECT 1"))
        assert said in str(refused.value).lower() or said in str(refused.value.__cause__).lower(), refused.value
    finally:
        await db.close()
    assert tls_db.password not in str(refused.value)


def test_fcl_migrate_takes_the_password_file(tls_db: TlsDatabase, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FCL_")}
    env |= {"FCL_DATABASE_URL": tls_db.url(), "FCL_DATABASE_PASSWORD_FILE": str(tls_db.password_file)}
    out = subprocess.run([FCL, "migrate"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert f"database at {head()}" in out.stdout or "database at head" in out.stdout, out.stdout
    assert tls_db.password not in out.stdout + out.stderr
