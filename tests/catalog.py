"""The catalog picture the parity test diffs: it lives in the package (automl_db.tools.catalog),
where `automl-db diff` uses it too."""

from automl_db.tools.catalog import CATALOG_QUERIES, PROJECT_SCHEMA, acl, snapshot

__all__ = ["CATALOG_QUERIES", "PROJECT_SCHEMA", "acl", "snapshot"]
