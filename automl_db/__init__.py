"""automl_db: the PostgreSQL data layer of the AutoML platform.

The SQL in ``schema/``, ``migrations/`` and ``queries/`` is the source of truth; this package
finds a database (``DATABASE_URL`` or an embedded server), migrates it, and runs that SQL.
"""

from automl_db.config import Settings
from automl_db.errors import AutomlDbError, DatabaseUnavailable, InvalidSetting, MigrationFailed

__all__ = ["AutomlDbError", "DatabaseUnavailable", "InvalidSetting", "MigrationFailed", "Settings"]
__version__ = "0.1.0"
