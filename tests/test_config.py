"""Settings: the same names and defaults as before pydantic-settings, and one clear line for a bad value."""

from pathlib import Path

import pytest

from automl_db.config import Settings
from automl_db.errors import AutomlDbError, InvalidSetting

VARIABLES = ["DATABASE_URL", "AUTOML_DB_DATA_DIR", "AUTOML_DB_PG_VERSION", "AUTOML_DB_CONNECT_TIMEOUT",
             "AUTOML_DB_POOL_MIN_SIZE", "AUTOML_DB_POOL_MAX_SIZE", "AUTOML_DB_POOL_TIMEOUT",
             "AUTOML_DB_STATEMENT_TIMEOUT_MS", "AUTOML_DB_PREPARE_THRESHOLD"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()
    assert settings == Settings()
    assert settings.database_url is None
    assert settings.embedded_data_dir.name == ".pgdata"
    assert (settings.embedded_pg_version, settings.connect_timeout) == (18, 10.0)
    assert (settings.pool_min_size, settings.pool_max_size, settings.pool_timeout) == (20, 30, 30.0)
    assert (settings.statement_timeout_ms, settings.prepare_threshold) == (0, 5)


def test_every_variable_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {"DATABASE_URL": "postgresql://x@127.0.0.1/y", "AUTOML_DB_DATA_DIR": str(tmp_path),
              "AUTOML_DB_PG_VERSION": "16", "AUTOML_DB_CONNECT_TIMEOUT": "2.5", "AUTOML_DB_POOL_MIN_SIZE": "1",
              "AUTOML_DB_POOL_MAX_SIZE": "4", "AUTOML_DB_POOL_TIMEOUT": "7", "AUTOML_DB_STATEMENT_TIMEOUT_MS": "250",
              "AUTOML_DB_PREPARE_THRESHOLD": "0"}
    for name, value in values.items():
        clean_env.setenv(name, value)
    assert Settings.from_env() == Settings(
        database_url="postgresql://x@127.0.0.1/y", embedded_data_dir=tmp_path, embedded_pg_version=16,
        connect_timeout=2.5, pool_min_size=1, pool_max_size=4, pool_timeout=7.0, statement_timeout_ms=250,
        prepare_threshold=0)


def test_keywords_win_and_the_environment_fills_the_rest(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DATABASE_URL", "postgresql://x@127.0.0.1/y")
    clean_env.setenv("AUTOML_DB_POOL_MIN_SIZE", "9")
    settings = Settings(pool_min_size=1, pool_max_size=2)
    assert (settings.database_url, settings.pool_min_size, settings.pool_max_size) == (
        "postgresql://x@127.0.0.1/y", 1, 2)


@pytest.mark.parametrize("value", ["none", "None", " NONE "])
def test_prepare_threshold_none_means_never(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("AUTOML_DB_PREPARE_THRESHOLD", value)
    assert Settings.from_env().prepare_threshold is None
    assert Settings(prepare_threshold=None).prepare_threshold is None


def test_an_empty_variable_counts_as_unset(clean_env: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        clean_env.setenv(name, "")
    assert Settings.from_env() == Settings()


@pytest.mark.parametrize(("name", "value", "says"), [
    ("AUTOML_DB_CONNECT_TIMEOUT", "ten", "AUTOML_DB_CONNECT_TIMEOUT='ten': Input should be a valid number"),
    ("AUTOML_DB_CONNECT_TIMEOUT", "0", "AUTOML_DB_CONNECT_TIMEOUT='0': Input should be greater than 0"),
    ("AUTOML_DB_PG_VERSION", "18.1", "AUTOML_DB_PG_VERSION='18.1': Input should be a valid integer"),
    ("AUTOML_DB_PREPARE_THRESHOLD", "never", "AUTOML_DB_PREPARE_THRESHOLD='never': Input should be a valid integer"),
    ("AUTOML_DB_STATEMENT_TIMEOUT_MS", "-1", "AUTOML_DB_STATEMENT_TIMEOUT_MS='-1': Input should be greater than or"),
    ("AUTOML_DB_POOL_MAX_SIZE", "5", "AUTOML_DB_POOL_MAX_SIZE / pool_max_size (5) is below AUTOML_DB_POOL_MIN_SIZE"),
])
def test_a_bad_variable_is_one_line_naming_it(clean_env: pytest.MonkeyPatch, name: str, value: str, says: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(InvalidSetting) as caught:
        Settings.from_env()
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, AutomlDbError)
    assert isinstance(caught.value, ValueError)  # what a bad value raised before


def test_a_bad_keyword_is_named_as_the_keyword(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidSetting, match=r"^pool_timeout='soon': Input should be a valid number"):
        Settings(pool_timeout="soon")
    with pytest.raises(InvalidSetting, match=r"^pool_size=3: Extra inputs are not permitted"):
        Settings(pool_size=3)


def test_a_url_is_never_echoed(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidSetting) as caught:
        Settings(database_url=["postgresql://u:secret@h/d"])
    assert "secret" not in str(caught.value)
    assert str(caught.value).startswith("database_url: ")


def test_settings_are_frozen(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.pool_min_size = 1
    assert settings.model_copy(update={"pool_min_size": 1}).pool_min_size == 1
