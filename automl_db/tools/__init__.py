"""Tooling around the package: the CLI, codegen, migrations, the embedded server, docs generators.

Services import `automl_db` itself (Database, queries, rows, errors, Settings); nothing here is
needed at run time except the embedded server when no DATABASE_URL is set.
"""
