from __future__ import annotations

from pathlib import Path

import pytest

from sidecar._config import ConfigError, config_hash, load_config, parse_config

VALID = """
default_route = "chat"

[server]
socket = "run/tollgate.sock"

[store]
path = "data/events.db"

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[models.gpt-4o]
provider = "openai"
context_window = 128000
max_output_tokens = 16384
capabilities = ["vision", "tools", "streaming"]
price = { input = 2.5, output = 10.0 }

[models.gpt-4o-mini]
provider = "openai"
context_window = 128000

[classes.flagship]
members = ["gpt-4o"]
degrade_to = "fast"

[classes.fast]
members = ["gpt-4o-mini"]

[routes.chat]
class = "fast"
max_tokens = 256

[routes.code]
class = "flagship"
"""


def parse(text: str) -> object:
    return parse_config(text, base_dir=Path("/etc/tollgate"), source="t.toml")


def problem(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return str(info.value)


def test_valid_config_loads_with_defaults_and_paths_resolved(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.toml"
    path.write_text(VALID)
    config = load_config(path)
    assert config.routes["chat"].model_class == "fast"
    assert config.routes["code"].max_tokens == 1024
    assert config.models["gpt-4o-mini"].capabilities == ["streaming"]
    assert config.server.socket_mode == 0o600
    assert config.server.socket == str(tmp_path / "run/tollgate.sock")
    assert config.store.path == str(tmp_path / "data/events.db")


def test_hash_is_stable_and_changes_with_content() -> None:
    a = parse(VALID)
    b = parse(VALID)
    c = parse(VALID.replace("max_tokens = 256", "max_tokens = 257"))
    assert config_hash(a) == config_hash(b)  # type: ignore[arg-type]
    assert config_hash(a) != config_hash(c)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("context_window = 128000\nmax_output", 'context_window = "big"\nmax_output'),
            "models.gpt-4o.context_window: Expected `int`, got `str`",
        ),
        (
            (
                'provider = "openai"\ncontext_window = 128000\n\n[classes',
                'provider = "azure"\ncontext_window = 128000\n\n[classes',
            ),
            "models.gpt-4o-mini.provider: unknown provider 'azure' (known providers: openai)",
        ),
        (
            ('members = ["gpt-4o"]', 'members = ["gpt-5"]'),
            "classes.flagship.members: unknown model 'gpt-5'",
        ),
        (('class = "flagship"', 'class = "premium"'), "routes.code.class: unknown class 'premium'"),
        (
            ('default_route = "chat"', 'default_route = "nope"'),
            "default_route: unknown route 'nope'",
        ),
        (
            ('kind = "openai"', 'kind = "openai"\ntimeout = 3'),
            "providers.openai: Object contains unknown field `timeout`",
        ),
        (
            ('kind = "openai"', 'kind = "carrier-pigeon"'),
            "providers.openai.kind: Invalid enum value",
        ),
        (
            ('base_url = "https://api.openai.com/v1"', 'base_url = "ftp://x"'),
            "providers.openai.base_url: must start with http:// or https://",
        ),
        (("max_tokens = 256", "max_tokens = 0"), "routes.chat.max_tokens: must be positive"),
        (
            ("max_tokens = 256", 'max_tokens = 256\ncascade_from = "cheap"'),
            "routes.chat.cascade_from: unknown class 'cheap'",
        ),
        (
            ('members = ["gpt-4o-mini"]', 'members = ["gpt-4o-mini"]\ndegrade_to = "flagship"'),
            "classes.flagship.degrade_to: degrades in a cycle",
        ),
        (
            ("max_output_tokens = 16384", "max_output_tokens = 200000"),
            "models.gpt-4o.max_output_tokens: must not exceed context_window",
        ),
        (
            (
                '[server]\nsocket = "run/tollgate.sock"',
                '[server]\nsocket = "s"\nsocket_mode = 4096',
            ),
            "server.socket_mode: must be a file mode",
        ),
    ],
)
def test_invalid_config_names_the_key(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in VALID
    assert expected in problem(VALID.replace(old, new, 1))


def test_missing_required_key_and_bad_toml() -> None:
    assert "missing required field `default_route`" in problem(
        VALID.replace('default_route = "chat"', "")
    )
    assert "not valid TOML" in problem("default_route = ")


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace('members = ["gpt-4o"]', 'members = ["x"]').replace(
        'class = "flagship"', 'class = "y"'
    )
    message = problem(text)
    assert "classes.flagship.members" in message
    assert "routes.code.class" in message


def test_the_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "deploy" / "tollgate.example.toml"
    config = load_config(example)
    assert config.server.socket == "/run/tollgate/tollgate.sock"
    assert config.routes["pii"].require_tags == ["pii_safe"]
