"""Settings, read from the environment (``DATABASE_URL``, ``AUTOML_DB_*``) or given explicitly.

`Settings(...)` takes the values it is given and reads every other field from its environment
variable (pydantic-settings), so `DATABASE_URL` wins over the embedded server whoever builds the
settings; `Settings.from_env()` is the same with nothing given. A value that does not parse, or
is out of range, raises `InvalidSetting` with one line naming the variable (or keyword) and the
value, instead of a traceback from deep inside the pool.
"""

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from automl_db.errors import InvalidSetting
from automl_db.tools.paths import PROJECT_ROOT

#: Fields whose value must not be echoed in an error message (a URL may carry a password).
_SECRET = {"database_url", "DATABASE_URL"}


def _default_data_dir() -> Path:
    return (PROJECT_ROOT or Path.cwd()) / ".pgdata"


class Settings(BaseSettings):
    """Where the database is. ``database_url`` wins; without it an embedded server is used.

    Each field's environment variable is its `validation_alias`; an empty variable counts as unset.
    """

    model_config = SettingsConfigDict(
        frozen=True, case_sensitive=True, env_ignore_empty=True, extra="forbid",
        validate_by_name=True, validate_by_alias=True)

    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    embedded_data_dir: Path = Field(default_factory=_default_data_dir, validation_alias="AUTOML_DB_DATA_DIR")
    embedded_pg_version: int = Field(18, gt=0, validation_alias="AUTOML_DB_PG_VERSION")
    connect_timeout: float = Field(10.0, gt=0, validation_alias="AUTOML_DB_CONNECT_TIMEOUT")
    #: The seed's pool: 20 connections kept, 10 more on demand (SQLAlchemy pool_size=20, max_overflow=10).
    pool_min_size: int = Field(20, ge=0, validation_alias="AUTOML_DB_POOL_MIN_SIZE")
    pool_max_size: int = Field(30, ge=1, validation_alias="AUTOML_DB_POOL_MAX_SIZE")
    #: Seconds a caller waits for a free connection before PoolTimeout.
    pool_timeout: float = Field(30.0, gt=0, validation_alias="AUTOML_DB_POOL_TIMEOUT")
    #: Server-side limit for one statement, in milliseconds (0: none). Set inside each transaction,
    #: so it also holds behind a transaction pooler. PostgreSQL takes at most 2^31 - 1.
    statement_timeout_ms: int = Field(0, ge=0, le=2**31 - 1, validation_alias="AUTOML_DB_STATEMENT_TIMEOUT_MS")
    #: Executions of a statement before psycopg prepares it on the server; None (`none` in the
    #: environment): never, behind a transaction pooler that does not track prepared statements,
    #: such as PgBouncer before 1.21.
    prepare_threshold: Annotated[int, Field(ge=0)] | None = Field(5, validation_alias="AUTOML_DB_PREPARE_THRESHOLD")
    #: Hot standbys that serve `Database.read()` (libpq URLs, each may list several hosts); none: reads
    #: run on the primary (`database_url`, which may list several hosts with target_session_attrs=read-write).
    #: In the environment: comma-separated (see split_urls).
    replica_urls: Annotated[tuple[str, ...], NoDecode] = Field((), validation_alias="AUTOML_DB_REPLICA_URLS")
    #: Seconds a read waits for a replica (a connection from its pool, and the replay of the position it
    #: was given) before it runs on the primary instead, or raises when it may not fall back.
    replica_wait_timeout: float = Field(1.0, ge=0, validation_alias="AUTOML_DB_REPLICA_WAIT_TIMEOUT")
    #: Seconds a replica that could not be reached is left out of the reads before they try it again.
    replica_retry_after: float = Field(5.0, ge=0, validation_alias="AUTOML_DB_REPLICA_RETRY_AFTER")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise InvalidSetting(_one_line(exc)) from exc

    @classmethod
    def from_env(cls) -> "Settings":
        """Every field from its environment variable, or its default."""
        return cls()

    @field_validator("prepare_threshold", mode="before")
    @classmethod
    def _none_means_never(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "none":
            return None
        return value

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replica_urls(cls, value: object) -> object:
        return split_urls(value) if isinstance(value, str) else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _pool_bounds(self) -> "Settings":
        if self.pool_max_size < self.pool_min_size:
            raise ValueError(f"AUTOML_DB_POOL_MAX_SIZE / pool_max_size ({self.pool_max_size}) is below "
                             f"AUTOML_DB_POOL_MIN_SIZE / pool_min_size ({self.pool_min_size})")
        return self


def _one_line(exc: ValidationError) -> str:
    """'AUTOML_DB_CONNECT_TIMEOUT='ten': Input should be a valid number...' — the variable (or the
    keyword) as it was given, its value, and pydantic's reason; several joined by '; '."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        reason = error["msg"].removeprefix("Value error, ")
        if not where:  # a rule over several fields names them itself
            parts.append(f"invalid settings: {reason}")
        elif where in _SECRET:
            parts.append(f"{where}: {reason}")
        else:
            parts.append(f"{where}={error['input']!r}: {reason}")
    return "; ".join(parts)


def split_urls(value: str) -> tuple[str, ...]:
    """Comma-separated libpq URLs. A comma is a separator only before a new `postgres[ql]://`: one URL's
    own host list (`postgresql://a:5432,b:5432/db`) stays whole."""
    return tuple(url.strip() for url in re.split(r",(?=\s*postgres(?:ql)?://)", value) if url.strip())
