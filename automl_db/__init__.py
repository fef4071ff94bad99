"""automl_db: the PostgreSQL data layer of the AutoML platform.

The SQL in ``schema/``, ``migrations/`` and ``queries/`` is the source of truth; this package
finds a database (``DATABASE_URL`` or an embedded server), runs that SQL and types its rows.
What a service needs is importable from here; tooling lives in ``automl_db.tools``.
"""

from automl_db.config import Settings
from automl_db.database import AsyncDatabase, Database
from automl_db.errors import AutomlDbError, DatabaseUnavailable, InvalidSetting, MigrationFailed
from automl_db.replicas import Position, Receipt

__all__ = ["AsyncDatabase", "AutomlDbError", "Database", "DatabaseUnavailable", "InvalidSetting", "MigrationFailed",
           "Position", "Receipt", "Settings"]
__version__ = "0.1.0"
