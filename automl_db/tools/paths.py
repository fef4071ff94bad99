"""Where the package's SQL lives: inside a built wheel, or in the checkout of an editable install."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
_BUNDLED = _PACKAGE / "_sql"
#: The checkout root when installed in editable mode (pyproject.toml beside the package).
PROJECT_ROOT: Path | None = _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None


def _sql_dir(name: str) -> Path:
    bundled = _BUNDLED / name
    if bundled.is_dir():
        return bundled
    if PROJECT_ROOT is not None and (PROJECT_ROOT / name).is_dir():
        return PROJECT_ROOT / name
    raise FileNotFoundError(f"automl_db cannot find its {name}/ directory (looked in {_BUNDLED} and the checkout)")


def schema_dir() -> Path:
    return _sql_dir("schema")


def migrations_dir() -> Path:
    return _sql_dir("migrations")


def queries_dir() -> Path:
    return _sql_dir("queries")


def schema_files() -> list[Path]:
    """Every schema file in the order that builds the schema (lexical path order)."""
    return sorted(schema_dir().rglob("*.sql"))
