"""The installation row: which install key the database belongs to (a fingerprint, never the key)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from mediamill.errors import ConfigError
from mediamill.store.tables import installation
from mediamill.store.timeutil import utcnow

KEY_MISMATCH = ("this process's install key is not the one this database was set up with: give every "
                "process of the installation the same MEDIAMILL_SECRET_KEY (or a copy of data_dir/secret_key)")


def check_install_key(engine: Engine, key_check: str) -> None:
    """Record ``key_check`` on first use; raise ConfigError when the database already holds another one."""
    stored = _stored(engine)
    if stored is None:
        try:
            with engine.begin() as conn:
                conn.execute(installation.insert().values(id=1, key_check=key_check, created_at=utcnow()))
            return
        except IntegrityError:  # another process recorded its key first: compare with that one
            stored = _stored(engine)
    if stored != key_check:
        raise ConfigError(KEY_MISMATCH)


def _stored(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(installation.c.key_check).where(installation.c.id == 1)).scalar()
