"""The boundary around the project's objects: the schema `automl`.

Every table, type, function and policy of the data layer lives in the schema automl (migration
0008); public holds yoyo's bookkeeping only (`_yoyo_migration`, `_yoyo_log`, `_yoyo_version`,
`yoyo_lock`: yoyo keeps them in the current schema, the first of the database's search_path
`public, automl`). So a tool that reads "the schema's tables" from the catalog asks for one
namespace, and nothing anywhere leaves yoyo's tables out by name.
"""

#: The schema that holds every object of the project.
SCHEMA = "automl"
#: The schema's OID as a SQL expression, for catalog queries: `where c.relnamespace = {NAMESPACE}`
#: (NULL, so no rows, in a database the migrations have not built yet).
NAMESPACE = f"to_regnamespace('{SCHEMA}')"
