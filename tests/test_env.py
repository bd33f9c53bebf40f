"""Settings parsing (realtime_project/env.py): typed values, one-line errors, production guards and warnings."""

from __future__ import annotations

import logging
import os
import runpy
import subprocess
import sys
from ipaddress import ip_network

import pytest

from realtime_project.env import (
    DEV_JWT_SECRET_KEY,
    DEV_SECRET_KEY,
    ConfigError,
    load_config,
    production_warnings,
)
from tests.support.server import ROOT

DEV = {"DJANGO_DEBUG": "true"}
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "a-real-django-secret-key-for-production-0123456789",
    "WS_JWT_SECRET_KEY": "a-real-jwt-signing-key-of-at-least-32-bytes!",
}
STRONG_JWT_KEY = PRODUCTION["WS_JWT_SECRET_KEY"]
SETTINGS_FILE = str(ROOT / "realtime_project" / "settings.py")


def error_for(env: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        load_config(env)
    return raised.value


# ---------------------------------------------------------------------------------------------
# Parsing


def test_defaults_match_the_design_document():
    config = load_config(DEV)
    assert (config.websocket_enabled, config.sse_enabled) == (True, True)
    assert (config.websocket_auth_required, config.sse_auth_required, config.api_auth_required) == (False,) * 3
    assert config.websocket_heartbeat_interval == 30 and config.websocket_disconnect_timeout == 60
    assert config.websocket_max_connections == 1000 and config.websocket_message_queue_size == 100
    assert config.sse_heartbeat_interval == 30 and config.sse_max_connections == 500
    assert config.sse_retry_timeout == 3000 and config.sse_max_message_size == 1048576
    assert config.ws_jwt_secret_key == DEV_JWT_SECRET_KEY
    assert (config.ws_jwt_algorithm, config.ws_jwt_expire_minutes) == ("HS256", 60)
    assert (config.ws_api_key_header, config.ws_api_keys) == ("X-API-Key", ())
    assert config.allowed_origins == () and config.allowed_ips == () and config.trusted_proxies == ()
    assert config.max_subscriptions_per_connection == 100
    assert (config.channel_history_size, config.channel_history_ttl) == (100, 86400)
    assert config.websocket_max_message_size == 65536


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("TRUE", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("OFF", False),
    ],
)
def test_booleans_accept_common_spellings(raw, expected):
    config = load_config({**DEV, "WEBSOCKET_AUTH_REQUIRED": raw, "SSE_ENABLED": raw})
    assert config.websocket_auth_required is expected and config.sse_enabled is expected


def test_lists_and_networks_are_trimmed_and_parsed():
    config = load_config(
        {
            **DEV,
            "WS_API_KEYS": " k1 , k2,,",
            "ALLOWED_IPS": "10.0.0.0/8, 192.168.1.7 ,2001:db8::/32",
            "TRUSTED_PROXIES": "10.0.0.1/8",  # host bits set: taken as its network
            "ALLOWED_ORIGINS": "https://app.example, .example.org, http://localhost:3000/, *, [::1]",
            "DJANGO_ALLOWED_HOSTS": "a.example,b.example",
        }
    )
    assert config.ws_api_keys == ("k1", "k2")
    assert config.allowed_ips == (ip_network("10.0.0.0/8"), ip_network("192.168.1.7/32"), ip_network("2001:db8::/32"))
    assert config.trusted_proxies == (ip_network("10.0.0.0/8"),)
    assert config.allowed_origins == ("https://app.example", ".example.org", "http://localhost:3000/", "*", "[::1]")
    assert config.django_allowed_hosts == ("a.example", "b.example")


def test_blank_values_mean_default():
    config = load_config({**DEV, "WEBSOCKET_MAX_CONNECTIONS": "  ", "CLIENT_RATE_LIMIT": ""})
    assert config.websocket_max_connections == 1000 and config.client_rate_limit == 50


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("WEBSOCKET_MAX_CONNECTIONS", "abc", "an integer >= 1"),
        ("WEBSOCKET_MAX_CONNECTIONS", "0", "an integer >= 1"),
        ("SSE_MAX_CONNECTIONS", "1.5", "an integer >= 1"),
        ("SSE_RETRY_TIMEOUT", "-3", "an integer >= 0"),
        ("WS_JWT_EXPIRE_MINUTES", "1e3", "an integer >= 1"),
        ("WEBSOCKET_HEARTBEAT_INTERVAL", "0", "a number of seconds > 0"),
        ("WEBSOCKET_HEARTBEAT_INTERVAL", "nan", "a number of seconds > 0"),
        ("WEBSOCKET_DISCONNECT_TIMEOUT", "inf", "a number of seconds >= 0"),
        ("CLIENT_RATE_LIMIT", "fast", "a number of seconds >= 0"),
        ("WEBSOCKET_AUTH_REQUIRED", "maybe", "a boolean"),
        ("SSE_ENABLED", "2", "a boolean"),
        ("DJANGO_DEBUG", "verbose", "a boolean"),
        ("ALLOWED_ORIGINS", "ftp://files.example", "a comma-separated list of origins"),
        ("ALLOWED_ORIGINS", "https://app.example/path", "a comma-separated list of origins"),
        ("ALLOWED_ORIGINS", "https://ok.example, not a host", "a comma-separated list of origins"),
        ("ALLOWED_IPS", "10.0.0.0/33", "a comma-separated list of IP addresses or CIDR networks"),
        ("ALLOWED_IPS", "10.0.0.0/8, localhost", "a comma-separated list of IP addresses or CIDR networks"),
        ("TRUSTED_PROXIES", "1.2.3", "a comma-separated list of IP addresses or CIDR networks"),
        ("DATABASE_URL", "mysql://db/x", "a URL with scheme sqlite or postgres"),
        ("DATABASE_URL", "db.sqlite3", "a URL with scheme"),
        ("REDIS_URL", "localhost:6379", "comma-separated distinct URLs with scheme redis or rediss or unix"),
        ("REDIS_URL", "redis://", "comma-separated distinct URLs with scheme redis"),
        ("WS_JWT_ALGORITHM", "RS256", "one of HS256, HS384, HS512"),
        ("WS_JWT_ALGORITHM", "none", "one of HS256, HS384, HS512"),
        ("LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
        ("SERVER_EVENT_LOOP", "trio", "one of uvloop, asyncio"),
        ("WS_API_KEY_HEADER", "X API Key", "an HTTP header name"),
        ("WS_API_KEY_HEADER", "X-Key:\nInjected", "an HTTP header name"),
        ("CHANNEL_NAMESPACES", "chat:*", "a JSON object of channel patterns to options"),
        ("CHANNEL_NAMESPACES", '["chat:*"]', "a JSON object of channel patterns to options"),
        ("CHANNEL_NAMESPACES", '{"chat:*": 3}', "'chat:*' to map to an object of options"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"histroy_size": 3}}', "'chat:*' to use only the options history_size"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"history_size": -1}}', "'chat:*' history_size to be an integer from 0"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"history_size": 2.5}}', "'chat:*' history_size to be an integer from 0"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"history_ttl": 0}}', "'chat:*' history_ttl to be an integer of seconds"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"presence": "no"}}', "'chat:*' presence to be true or false"),
        ("CHANNEL_NAMESPACES", '{"chat:*": {"client_publish": 1}}', "'chat:*' client_publish to be true or false"),
        ("CHANNEL_NAMESPACES", '{"a b": {}}', "patterns of 1-100 characters without spaces"),
        ("REALTIME_SUBSCRIBE_HOOK", "myapp", "a dotted path to a callable"),
        ("REALTIME_CONNECT_HOOK", "myapp.hooks.on connect", "a dotted path to a callable"),
        ("REALTIME_PUBLISH_HOOK", "myapp.hooks\n.x", "a dotted path to a callable"),
        ("REALTIME_HOOK_TIMEOUT", "0", "a number of seconds > 0"),
    ],
)
def test_bad_value_error_is_one_line_naming_variable_value_and_expectation(name, value, expected):
    error = error_for({**DEV, name: value})
    message = str(error)
    assert error.name == name
    assert "\n" not in message
    assert message.startswith(f"{name}=")
    assert repr(value.strip()) in message or repr(value) in message
    assert f"expected {expected}" in message


def test_namespaces_keep_their_order_and_only_the_options_given():
    config = load_config(
        {
            **DEV,
            "CHANNEL_NAMESPACES": '{"chat:*": {"history_size": 3, "client_publish": false}, "*": {"presence": false}}',
        }
    )
    first, second = config.channel_namespaces
    assert (first.pattern, first.history_size, first.client_publish, first.presence) == ("chat:*", 3, False, None)
    assert (second.pattern, second.presence, second.history_size) == ("*", False, None)
    assert load_config(DEV).channel_namespaces == ()


def test_hook_settings_are_dotted_paths_with_a_timeout():
    config = load_config({**DEV, "REALTIME_SUBSCRIBE_HOOK": "myapp.realtime.can_join", "REALTIME_HOOK_TIMEOUT": "0.5"})
    assert config.realtime_subscribe_hook == "myapp.realtime.can_join"
    assert (config.realtime_connect_hook, config.realtime_publish_hook) == ("", "")
    assert config.realtime_hook_timeout == 0.5
    assert load_config(DEV).realtime_hook_timeout == 3.0


def test_first_bad_value_stops_parsing_with_its_own_error():
    error = error_for({**DEV, "WEBSOCKET_MAX_CONNECTIONS": "x", "SSE_MAX_CONNECTIONS": "y"})
    assert error.name == "WEBSOCKET_MAX_CONNECTIONS"


def test_secrets_never_appear_in_config_repr():
    config = load_config({**PRODUCTION, "WS_API_KEYS": "api-key-secret-123"})
    text = repr(config)
    assert PRODUCTION["DJANGO_SECRET_KEY"] not in text
    assert STRONG_JWT_KEY not in text
    assert "api-key-secret-123" not in text


# ---------------------------------------------------------------------------------------------
# Production guards (DJANGO_DEBUG=false)


def test_production_settings_load():
    config = load_config(PRODUCTION)
    assert config.django_debug is False and config.ws_jwt_secret_key == STRONG_JWT_KEY


def test_debug_defaults_to_false_so_guards_apply_when_unset():
    env = {name: value for name, value in PRODUCTION.items() if name != "DJANGO_DEBUG"}
    assert load_config(env).django_debug is False
    assert error_for({}).name == "DJANGO_SECRET_KEY"


def test_production_refuses_unset_django_secret_key():
    error = error_for({**PRODUCTION, "DJANGO_SECRET_KEY": ""})
    assert error.name == "DJANGO_SECRET_KEY" and "DJANGO_DEBUG=false" in str(error)


def test_production_refuses_the_development_django_secret_key():
    error = error_for({**PRODUCTION, "DJANGO_SECRET_KEY": DEV_SECRET_KEY})
    assert error.name == "DJANGO_SECRET_KEY"
    assert DEV_SECRET_KEY not in str(error)


@pytest.mark.parametrize("jwt_key", [None, DEV_JWT_SECRET_KEY])
def test_production_refuses_the_development_jwt_key(jwt_key):
    env = {name: value for name, value in PRODUCTION.items() if name != "WS_JWT_SECRET_KEY"}
    if jwt_key is not None:
        env["WS_JWT_SECRET_KEY"] = jwt_key
    error = error_for(env)
    assert error.name == "WS_JWT_SECRET_KEY" and "DJANGO_DEBUG=false" in str(error)
    assert DEV_JWT_SECRET_KEY not in str(error)


@pytest.mark.parametrize(
    ("key", "accepted"), [("k" * 31, False), ("k" * 32, True), ("é" * 16, True), ("é" * 15, False)]
)
def test_production_jwt_key_needs_32_bytes(key, accepted):
    if accepted:
        assert load_config({**PRODUCTION, "WS_JWT_SECRET_KEY": key}).ws_jwt_secret_key == key
        return
    error = error_for({**PRODUCTION, "WS_JWT_SECRET_KEY": key})
    assert error.name == "WS_JWT_SECRET_KEY" and "32 bytes" in str(error)
    assert key not in str(error), "the error must not print the key"


def test_development_accepts_the_development_keys():
    config = load_config({**DEV, "WS_JWT_SECRET_KEY": "short"})
    assert config.ws_jwt_secret_key == "short" and config.django_secret_key == DEV_SECRET_KEY


# ---------------------------------------------------------------------------------------------
# The all-auth-off warning


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        (PRODUCTION, ["WEBSOCKET_AUTH_REQUIRED, SSE_AUTH_REQUIRED and API_AUTH_REQUIRED all false"]),
        ({**PRODUCTION, "API_AUTH_REQUIRED": "false"}, ["all false"]),
        ({**PRODUCTION, "WEBSOCKET_AUTH_REQUIRED": "true"}, []),
        ({**PRODUCTION, "SSE_AUTH_REQUIRED": "true"}, ["CLIENT_PUBLISH_ENABLED=true"]),
        ({**PRODUCTION, "SSE_AUTH_REQUIRED": "true", "CLIENT_PUBLISH_ENABLED": "false"}, []),
        ({**PRODUCTION, "WEBSOCKET_AUTH_REQUIRED": "true", "API_AUTH_REQUIRED": "false"}, ["API_AUTH_REQUIRED=false"]),
        ({**PRODUCTION, "API_AUTH_REQUIRED": "true"}, ["CLIENT_PUBLISH_ENABLED=true"]),
        (DEV, []),
    ],
)
def test_production_warnings_say_what_anonymous_callers_may_do(env, warned):
    warnings = production_warnings(load_config(env))
    assert len(warnings) == len(warned), warnings
    for warning, expected in zip(warnings, warned, strict=True):
        assert expected in warning


@pytest.mark.parametrize(("proxies", "warned"), [("0.0.0.0/0", True), ("::/0", True), ("172.16.0.0/12", False)])
def test_production_warns_when_trusted_proxies_trust_everyone(proxies, warned):
    config = load_config({**PRODUCTION, "WEBSOCKET_AUTH_REQUIRED": "true", "TRUSTED_PROXIES": proxies})
    warnings = production_warnings(config)
    assert bool(warnings) is warned
    assert all("TRUSTED_PROXIES" in warning for warning in warnings)


def _settings_environment(monkeypatch, env: dict[str, str]) -> None:
    for name in list(os.environ):
        if name.startswith(("WEBSOCKET_", "SSE_", "WS_", "API_", "DJANGO_", "ALLOWED_", "TRUSTED_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("env", "warned"), [(PRODUCTION, True), ({**PRODUCTION, "WEBSOCKET_AUTH_REQUIRED": "1"}, False)]
)
def test_settings_log_the_all_auth_off_warning_at_start_up(monkeypatch, caplog, env, warned):
    _settings_environment(monkeypatch, env)
    with caplog.at_level(logging.WARNING, logger="realtime_project"):
        runpy.run_path(SETTINGS_FILE)  # a fresh copy; django.conf.settings is untouched
    logged = [r.getMessage() for r in caplog.records if r.name == "realtime_project" and r.levelno == logging.WARNING]
    assert bool(logged) is warned, logged


def test_settings_stop_with_one_line_and_exit_2_on_a_bad_value(monkeypatch, capsys):
    _settings_environment(monkeypatch, {**DEV, "SSE_MAX_CONNECTIONS": "lots"})
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(SETTINGS_FILE)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == "configuration error: SSE_MAX_CONNECTIONS='lots': expected an integer >= 1\n"


# ---------------------------------------------------------------------------------------------
# Through a real process: `python manage.py check`


def manage(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("WEBSOCKET_", "SSE_", "WS_", "API_", "DJANGO_", "ALLOWED_", "TRUSTED_", "REDIS_URL"))
    }
    base.update(
        {"DJANGO_SETTINGS_MODULE": "realtime_project.settings", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=base, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({**DEV, "WEBSOCKET_MAX_CONNECTIONS": "many"}, "WEBSOCKET_MAX_CONNECTIONS"),
        ({**DEV, "ALLOWED_IPS": "10.0.0.0/40"}, "ALLOWED_IPS"),
        ({"DJANGO_DEBUG": "false", "WS_JWT_SECRET_KEY": STRONG_JWT_KEY}, "DJANGO_SECRET_KEY"),
        ({**PRODUCTION, "WS_JWT_SECRET_KEY": "too-short"}, "WS_JWT_SECRET_KEY"),
        ({**DEV, "CHANNEL_NAMESPACES": '{"chat:*": {"recover": "yes"}}'}, "CHANNEL_NAMESPACES"),
    ],
)
def test_manage_check_with_bad_env_prints_one_line_and_fails(tmp_path, env, name):
    result = manage(tmp_path, "check", **env)
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {name}=") and "expected" in lines[0]
    assert "too-short" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("path", "problem"),
    [("tests.support.no_such_module.hook", "No module named"), ("streaming.protocol.BROADCAST", "is not callable")],
)
def test_manage_check_with_a_hook_that_cannot_be_used_prints_one_line_and_fails(tmp_path, path, problem):
    result = manage(tmp_path, "check", **DEV, REALTIME_SUBSCRIBE_HOOK=path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: REALTIME_SUBSCRIBE_HOOK={path!r}") and problem in lines[0]


def test_manage_check_in_production_warns_when_all_auth_is_off(tmp_path):
    open_server = manage(tmp_path, "check", **PRODUCTION)
    assert open_server.returncode == 0, open_server.stderr
    assert "WEBSOCKET_AUTH_REQUIRED, SSE_AUTH_REQUIRED and API_AUTH_REQUIRED all false" in open_server.stderr
    guarded = manage(tmp_path, "check", **PRODUCTION, WEBSOCKET_AUTH_REQUIRED="true")
    assert guarded.returncode == 0, guarded.stderr
    assert "AUTH_REQUIRED" not in guarded.stderr
