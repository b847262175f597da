"""One place for configuration: every environment variable is defined in netweave/settings.py,
read only through netweave/env.py, documented in README from the definitions, and a bad value
names the variable."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from adapters.static.__main__ import DEFAULT_PORT, parse_args
from devstack.stack import DEFAULT_POLICY, EXAMPLE_INVENTORY, StackConfig
from netweave import env, settings
from server.config import GatewayConfig
from server.majors import parse_majors
from server.notifier.config import NotifierConfig
from server.subscriptions.callbacks import CallbackPolicy

REPO = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("netweave", "server", "adapters", "devstack", "rest_facade", "bench")
READS = re.compile(r"\bos\.environ\b|\bgetenv\b|\bimport environ\b")
# Handing the whole environment to a child process reads no variable.
PASS_THROUGH = re.compile(r"\*\*os\.environ\b")
VARIABLE = re.compile(r"""(?:environ\.get|getenv)\(\s*["'](\w+)["']|environ\[\s*["'](\w+)["']""")
# Reads outside the files this change could edit: each variable is defined in netweave.settings
# (and so documented), but the module still reads it itself. Route it through the setting
# (`settings.ADAPTER_PORT.read()`...) and delete its line here.
PENDING: dict[str, set[str]] = {}
# The C compiler of the Envoy module build: the toolchain's convention, not netweave's.
NOT_NETWEAVE: dict[str, set[str]] = {"rest_facade/envoy_modules.py": {"CC"}}
# Where a config is built from the environment: the processes' entry points and the config
# modules themselves; never a constructor.
FROM_ENV_CALLERS = {
    "server/__main__.py",
    "server/notifier/__main__.py",
    "devstack/__main__.py",
    "server/config.py",
    "server/notifier/config.py",
}
SECRET = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class RecordingEnviron(Mapping[str, str]):
    """An environment that notes every variable asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def source_files() -> Iterator[tuple[str, str]]:
    for directory in SOURCE_DIRS:
        for path in sorted((REPO / directory).rglob("*.py")):
            yield str(path.relative_to(REPO)), path.read_text()


# --- the README table ----------------------------------------------------------------------


def test_readme_configuration_table_is_the_generated_one() -> None:
    written = settings.readme_table((REPO / "README.md").read_text())
    assert written == settings.markdown_table(), (
        "README's configuration table differs from netweave/settings.py: "
        "run .venv/bin/python -m netweave.settings --update-readme"
    )


def test_update_readme_replaces_only_the_table() -> None:
    readme = "# x\n\n## Configuration\n\nProse.\n\n| a |\n|---|\n| b |\n\nMore.\n\n## Next\n"
    table = settings.markdown_table(settings.CORE_SETTINGS[:1])
    updated = settings.with_table(readme, table)
    assert updated == readme.replace("| a |\n|---|\n| b |\n", table)
    assert settings.readme_table(updated) == table


def test_every_variable_has_one_meaning_per_reader() -> None:
    seen: set[tuple[str, str]] = set()
    for setting in settings.ALL_SETTINGS:
        assert setting.readers and set(setting.readers) <= set(settings.READERS), setting.name
        assert setting.meaning, setting.name
        for reader in setting.readers:
            assert (setting.name, reader) not in seen, (setting.name, reader)
            seen.add((setting.name, reader))


# --- every read goes through the settings ---------------------------------------------------


def test_every_environment_read_goes_through_the_settings() -> None:
    defined = {setting.name for setting in settings.ALL_SETTINGS}
    found: dict[str, set[str]] = {}
    for path, text in source_files():
        if path == "netweave/env.py":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if not READS.search(PASS_THROUGH.sub("", line)):
                continue
            names = {a or b for a, b in VARIABLE.findall(line)}
            allowed = PENDING.get(path, set()) | NOT_NETWEAVE.get(path, set())
            assert names and names <= allowed, (
                f"{path}:{number} reads the environment itself; define the variable in "
                f"netweave/settings.py and read it through its Setting: {line.strip()}"
            )
            found.setdefault(path, set()).update(names)
    assert {path: found.get(path, set()) for path in PENDING} == PENDING, (
        "a pending read was routed through netweave.settings: delete it from PENDING"
    )
    for names in PENDING.values():
        assert names <= defined


def test_configs_are_built_from_the_environment_only_at_the_entry_points() -> None:
    for path, text in source_files():
        if ".from_env(" in text:
            assert path in FROM_ENV_CALLERS, f"{path} builds a config from the environment"


@pytest.mark.parametrize(
    ("build", "reader", "environ", "read_elsewhere"),
    [
        (GatewayConfig.from_env, settings.CORE, {}, {"NETWEAVE_LOG_LEVEL"}),
        (
            NotifierConfig.from_env,
            settings.NOTIFIER,
            {"NETWEAVE_WEBHOOK_SECRET": SECRET},
            {"NETWEAVE_LOG_LEVEL"},
        ),
        (StackConfig.from_env, settings.MAKE_RUN, {}, set()),
    ],
    ids=["core", "notifier", "make run"],
)
def test_each_process_reads_exactly_its_listed_settings(
    build: Any, reader: str, environ: dict[str, str], read_elsewhere: set[str]
) -> None:
    recording = RecordingEnviron(environ)
    build(recording)
    listed = {setting.name for setting in settings.settings_of(reader)}
    assert recording.asked == listed - read_elsewhere


# --- a bad value names the variable ---------------------------------------------------------

# A value each kind refuses (text, paths and URLs take any value).
BAD_VALUES: dict[env.Kind[Any], str] = {
    env.INTEGER: "twelve",
    env.NUMBER: "soon",
    env.FLAG: "maybe",
    settings.FILTER_MODE: "sometimes",
    settings.CIDR_LIST: "not-a-network",
    settings.ENDPOINT_LIST: "9901",
    settings.MAJORS: "v9",
    settings.EXTENSIONS_PATHS: "rack",
}


def bad_cases(reader: str) -> list[Any]:
    cases = [
        pytest.param(setting.name, BAD_VALUES[setting.kind], id=setting.name)
        for setting in settings.settings_of(reader)
        if setting.kind in BAD_VALUES
    ]
    if reader in (settings.CORE, settings.NOTIFIER):
        cases.append(pytest.param("NETWEAVE_CALLBACK_CA_BUNDLE", "/nonexistent/ca.pem", id="CA"))
    return cases


@pytest.mark.parametrize(("name", "value"), bad_cases(settings.CORE))
def test_a_bad_core_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        GatewayConfig.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [*bad_cases(settings.NOTIFIER), ("NETWEAVE_WEBHOOK_SECRET", "whsec_not base64!")],
)
def test_a_bad_notifier_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        NotifierConfig.from_env({"NETWEAVE_WEBHOOK_SECRET": SECRET, name: value})


@pytest.mark.parametrize(("name", "value"), bad_cases(settings.MAKE_RUN))
def test_a_bad_make_run_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        StackConfig.from_env({name: value})


def test_a_bad_adapter_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NETWEAVE_ADAPTER_PORT", "twelve")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "NETWEAVE_ADAPTER_PORT" in capsys.readouterr().err


def test_the_message_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"^NETWEAVE_GRPC_PORT must be an integer, got 'x'$"):
        settings.GRPC_PORT.read({"NETWEAVE_GRPC_PORT": "x"})
    with pytest.raises(ValueError, match=r"^NETWEAVE_NOTIFY_FILTER_MODE must be include or "):
        settings.NOTIFY_FILTER_MODE.read({"NETWEAVE_NOTIFY_FILTER_MODE": "all"})


# --- reading ----------------------------------------------------------------------------------


def test_unset_or_blank_means_the_default_and_values_are_typed() -> None:
    assert settings.PAGE_SIZE.read({}) == 1000
    assert settings.PAGE_SIZE.read({"NETWEAVE_PAGE_SIZE": "  "}) == 1000
    assert settings.PAGE_SIZE.read({"NETWEAVE_PAGE_SIZE": " 50 "}) == 50
    assert settings.REQUIRE_CLIENT_CERT.read({"NETWEAVE_REQUIRE_CLIENT_CERT": "Off"}) is False
    assert settings.NOTIFY_TIMEOUT_S.read({"NETWEAVE_NOTIFY_TIMEOUT_S": "2.5"}) == 2.5
    assert settings.ADAPTERS.read({"NETWEAVE_ADAPTERS": "a:1, b:2,"}) == ("a:1", "b:2")
    assert settings.NOTIFY_FILTER_MODE.read({"NETWEAVE_NOTIFY_FILTER_MODE": " Exclude"}) == (
        "exclude"
    )


def test_indexed_extensions_are_paths_below_extensions_in_the_filters_syntax() -> None:
    def read(value: str) -> tuple[tuple[str, ...], ...]:
        return GatewayConfig.from_env({"NETWEAVE_INDEXED_EXTENSIONS": value}).indexed_extensions

    assert GatewayConfig.from_env({}).indexed_extensions == ()
    assert read(" extensions/rack, extensions/site/rack,extensions/rack,extensions/a~1b~0c,") == (
        ("extensions", "rack"),
        ("extensions", "site", "rack"),
        ("extensions", "a/b~c"),
    )
    for bad in ("rack", "extensions", "extensions/", "extensions//rack", "name/x", "extensions/~x"):
        with pytest.raises(ValueError, match=r"^NETWEAVE_INDEXED_EXTENSIONS: "):
            read(bad)
    nine = ",".join(f"extensions/k{i}" for i in range(9))
    with pytest.raises(ValueError, match="at most 8 paths, got 9"):
        read(nine)


def test_an_empty_audit_log_means_none_and_text_is_kept_as_given() -> None:
    assert settings.AUDIT_LOG.read({}) == "-"
    assert settings.AUDIT_LOG.read({"NETWEAVE_AUDIT_LOG": ""}) == ""
    assert settings.WEBHOOK_SECRET.read({"NETWEAVE_WEBHOOK_SECRET": " key "}) == " key "


def test_make_run_reads_its_own_meanings() -> None:
    config = StackConfig.from_env(
        {"REDIS_URL": "redis://redis:6379/1", "NETWEAVE_AUTH_POLICY": "/etc/policy.yaml"}
    )
    assert config.redis_url == "redis://redis:6379/1"
    assert config.auth_policy == Path("/etc/policy.yaml")
    defaults = StackConfig.from_env({})
    assert (defaults.redis_url, defaults.service_uri, defaults.smo_registration_url) == (
        None,
        None,
        None,
    )
    assert defaults.auth_policy == DEFAULT_POLICY
    assert defaults.inventory == EXAMPLE_INVENTORY.resolve()


# --- defaults, once ---------------------------------------------------------------------------


def field_default(cls: Any, name: str) -> Any:
    (found,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return found.default_factory() if callable(found.default_factory) else found.default


def test_defaults_kept_beside_their_code_agree_with_the_settings() -> None:
    policy = CallbackPolicy()
    assert policy.allow_http is settings.CALLBACK_ALLOW_HTTP.default
    assert policy.allow_private is settings.CALLBACK_ALLOW_PRIVATE.default
    assert policy.probe is settings.CALLBACK_PROBE.default
    assert policy.probe_timeout_s == settings.CALLBACK_PROBE_TIMEOUT_S.default
    assert policy.dns_timeout_s == settings.CALLBACK_DNS_TIMEOUT_S.default
    assert policy.ca_bundle == settings.CALLBACK_CA_BUNDLE.default
    assert field_default(NotifierConfig, "filter_mode") == settings.NOTIFY_FILTER_MODE.default
    assert field_default(GatewayConfig, "served_majors") == parse_majors(
        settings.SERVED_MAJORS.default
    )
    assert settings.STACK_AUTH_POLICY.default == DEFAULT_POLICY
    assert settings.INVENTORY.default == EXAMPLE_INVENTORY
    assert settings.ADAPTER_PORT.default == DEFAULT_PORT


def test_the_default_environment_gives_the_default_configs() -> None:
    core = GatewayConfig.from_env({})
    assert dataclasses.replace(core, callback_policy=CallbackPolicy()) == GatewayConfig(
        adapters=settings.ADAPTERS.default
    )
    notifier = NotifierConfig.from_env({"NETWEAVE_WEBHOOK_SECRET": "key"})
    assert dataclasses.replace(notifier, callback_policy=CallbackPolicy()) == NotifierConfig(
        webhook_secret=b"key"
    )
