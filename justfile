# automl_db tasks. Tools come from the project's .venv when there is one (see README).
set shell := ["bash", "-euo", "pipefail", "-c"]
export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")

# List the recipes
default:
    @just --list

# Embedded server (or DATABASE_URL) + migrations + reference data, then a summary
up:
    automl-db up

# Run the test suite on the embedded server, or on DATABASE_URL when set
test *args:
    python -m pytest -q {{ args }}

# ruff, mypy --strict, squawk on the migrations
lint:
    ruff check .
    mypy
    squawk migrations/*.sql

# Apply pending migrations
migrate:
    automl-db migrate

# Applied and pending migrations
status:
    automl-db status

# Start the embedded server and print its URL
server:
    automl-db server

# Stop the embedded server
down:
    automl-db stop
