# automl_db tasks. Tools come from the project's .venv when there is one (see README).
set shell := ["bash", "-euo", "pipefail", "-c"]
export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")

# List the recipes
default:
    @just --list

# Embedded server (or DATABASE_URL) + migrations + reference data, then a summary (--json: for CI)
up *args:
    automl-db up {{ args }}

# The main job: the platform's story end to end through the typed API
demo: up
    python -m automl_db.tools.demo

# Regenerate automl_db/rows.py, queries/*.py (one module per queries/*.sql), aqueries.py (--check: fail if stale)
codegen *args:
    python -m automl_db.tools.codegen {{ args }}

# Run the test suite on the embedded server, or on DATABASE_URL when set
test *args:
    python -m pytest -q {{ args }}

# Rewrite docs/schema.md (ER diagram, tables, rules, triggers) from a database the migrations built (--check: fail if stale)
schema-doc *args:
    python -m automl_db.tools.schemadoc {{ args }}

# ruff, mypy --strict, squawk on the migrations, generated code, post-apply.sql and docs/schema.md fresh, landed migrations unedited
lint:
    ruff check .
    mypy
    squawk migrations/*.sql
    python -m automl_db.tools.codegen --check
    python -m automl_db.tools.postapply --check
    python -m automl_db.tools.frozen --check
    python -m automl_db.tools.schemadoc --check

# Regenerate migrations/post-apply.sql from schema/post/ (--check: fail if stale)
post-apply *args:
    python -m automl_db.tools.postapply {{ args }}

# Freeze the migrations that landed: their checksums into migrations/frozen.sha256
freeze:
    python -m automl_db.tools.frozen --freeze

# Apply pending migrations
migrate:
    automl-db migrate

# Applied and pending migrations, read-only (--json: for CI)
status *args:
    automl-db status {{ args }}

# Start the embedded server and print its URL
server:
    automl-db server

# Stop the embedded server
stop:
    automl-db stop

# Open the server's own psql on the database (arguments go to psql: just psql -c 'table tier_limits')
[positional-arguments]
psql *args:
    automl-db psql "$@"

# Drop leftover test databases, then drop and rebuild the local database (see automl-db reset --help)
reset *args:
    automl-db reset {{ args }}

# Benchmarks against their physical floors in the same run; figures into docs/benchmarks.md
# (--quick: smoke test; --only ledger|queue|costs|api|replication: print one table, write nothing)
bench *args:
    python -m bench.run {{ args }}

# The Citus blocker list in docs/scaling.md, from the migrated catalog (--check: fail if stale)
citus-blockers *args:
    python -m automl_db.tools.citus {{ args }}
