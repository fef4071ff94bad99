"""Typed errors of automl_db. Operational errors here; query errors join them with the query layer."""


class AutomlDbError(Exception):
    """Base of every error automl_db raises on purpose."""


class DatabaseUnavailable(AutomlDbError):
    """The database server cannot be reached or started."""


class MigrationFailed(AutomlDbError):
    """A migration did not apply; nothing of it was committed."""

    def __init__(self, migration: str, message: str) -> None:
        super().__init__(f"migration {migration} failed: {message}")
        self.migration = migration
        self.message = message
