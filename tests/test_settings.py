"""Settings from the environment and `.env`, parsed by pydantic-settings (server/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No PLEDGEQL_* variable of the test run's, and a folder without a .env."""
    import os

    for name in list(os.environ):
        if name.startswith("PLEDGEQL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_fractional_timeouts_are_seconds_not_a_startup_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEQL_DB_CONNECT_TIMEOUT", "0.5")
    monkeypatch.setenv("PLEDGEQL_DB_COMMAND_TIMEOUT", "2.25")
    monkeypatch.setenv("PLEDGEQL_DB_POOL_TIMEOUT", "1.5")
    monkeypatch.setenv("PLEDGEQL_HEADER_TIMEOUT", "0.75")
    settings = Settings.from_env()
    assert settings.db_connect_timeout == 0.5
    assert settings.db_command_timeout == 2.25
    assert settings.db_pool_timeout == 1.5
    assert settings.header_timeout == 0.75


def test_without_variables_every_setting_is_its_documented_default() -> None:
    assert Settings.from_env() == Settings()


def test_every_variable_reaches_the_settings_it_configures(monkeypatch: pytest.MonkeyPatch) -> None:
    # A variable read but never handed on would be a setting that silently does nothing.
    from server.settings import _Environment

    samples = {int: "7", float: "0.5", bool: "true", Path: "/elsewhere", str: "value"}
    for name, declared in _Environment.model_fields.items():
        types = (declared.annotation, *getattr(declared.annotation, "__args__", ()))
        kind = next((k for k in samples if k in types), None)
        value = "production" if name == "env" else samples[kind] if kind else "s" * 40
        monkeypatch.setenv(f"PLEDGEQL_{name.upper()}", value)
        assert Settings.from_env() != Settings(), name
        monkeypatch.delenv(f"PLEDGEQL_{name.upper()}")


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEQL_DATABASE_URL", "")
    monkeypatch.setenv("PLEDGEQL_MAX_DEPTH", "")
    settings = Settings.from_env()
    assert settings.database_url is None
    assert settings.max_depth == 12


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLEDGEQL_DB_CONNECT_TIMEOUT", "0.000"),
        ("PLEDGEQL_DB_CONNECT_TIMEOUT", "-1.2345"),
        ("PLEDGEQL_AUDIT_LOCK_TIMEOUT", "soon"),
        ("PLEDGEQL_MAX_DEPTH", "deep-secret-value"),
        ("PLEDGEQL_ENV", "staging-secret-value"),
        ("PLEDGEQL_DB_POOL_PRE_PING", "perhaps-secret-value"),
        # A limit or size of 0 or less would refuse every request (or none): stopped at the start.
        ("PLEDGEQL_MAX_BODY_BYTES", "-5"),
        ("PLEDGEQL_MAX_DEPTH", "-1"),
        ("PLEDGEQL_RATE_LIMIT_BURST", "-3"),
        ("PLEDGEQL_MAX_CONNECTIONS", "-10"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable_and_never_echoing_the_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env()
    message = str(stopped.value)
    assert name in message
    assert value not in message


@pytest.mark.parametrize(
    "name", ["PLEDGEQL_MAX_COST", "PLEDGEQL_RATE_LIMIT_PER_MINUTE", "PLEDGEQL_POOL_SIZE", "PLEDGEQL_MAX_TOKENS"]
)
def test_a_limit_of_zero_stops_the_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "0")
    with pytest.raises(SystemExit, match=f"{name}: Input should be greater than 0"):
        Settings.from_env()


def test_the_mode_is_read_whatever_its_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEQL_ENV", " Production ")
    assert Settings.from_env().is_production


def test_lists_are_comma_separated_and_policy_folders_colon_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLEDGEQL_CORS_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("PLEDGEQL_POLICY_DIRS", "/one:/two")
    monkeypatch.setenv("PLEDGEQL_DB_POOL_PRE_PING", "yes")
    settings = Settings.from_env()
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.policy_dirs == (Path("/one"), Path("/two"))
    assert settings.db_pool_pre_ping is True


def test_a_dotenv_file_is_read_and_the_environment_wins_over_it(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_text("PLEDGEQL_MAX_DEPTH=7\nPLEDGEQL_MAX_ALIASES=9\nOTHER_TOOL_SETTING=ignored\n")
    monkeypatch.setenv("PLEDGEQL_MAX_ALIASES", "11")
    settings = Settings.from_env()
    assert settings.max_depth == 7
    assert settings.max_aliases == 11


def test_the_audit_key_is_read_through_settings_and_secrets_stay_out_of_its_repr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PLEDGEQL_AUDIT_KEY", "audit-key-kept-out-of-reprs")
    monkeypatch.setenv("PLEDGEQL_JWT_SECRET", "jwt-secret-kept-out-of-reprs")
    settings = Settings.from_env()
    monkeypatch.delenv("PLEDGEQL_AUDIT_KEY")
    assert settings.audit_key() == b"audit-key-kept-out-of-reprs"
    assert settings.development_jwt_secret() == "jwt-secret-kept-out-of-reprs"
    assert "kept-out-of-reprs" not in repr(settings)


@pytest.mark.parametrize("value", ["abc-secret", "-17.5", "0", "nan", "inf"])
def test_a_bad_live_limit_stops_the_start_naming_the_variable_and_never_echoing_the_value(value: str) -> None:
    from server.subscriptions import LiveLimits

    with pytest.raises(SystemExit) as stopped:
        LiveLimits.from_env({"PLEDGEQL_LIVE_QUEUE": value})
    message = str(stopped.value)
    assert message.startswith("Invalid configuration: PLEDGEQL_LIVE_QUEUE must be a")
    assert value not in message.removeprefix("Invalid configuration: PLEDGEQL_LIVE_QUEUE")
