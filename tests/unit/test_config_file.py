"""Settings from a TOML file under the environment; unknown variables and keys refused with the
nearest valid name; `hindsight config show` masks secrets."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.errors import ConfigError
from pipeline.ops.cli import main
from pipeline.settings import CONFIG_ENV, Settings


def test_the_file_lies_under_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hindsight.toml"
    path.write_text('lookback_s = 42\nfollow_s = 7\nprimary_sinks = ["clickhouse", "file"]\n')
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv("HINDSIGHT_FOLLOW_S", "9")
    settings = Settings()
    assert settings.lookback_s == 42 and settings.follow_s == 9  # the environment wins
    assert settings.primary_sinks == ["clickhouse", "file"]
    assert Settings(lookback_s=5).lookback_s == 5  # and what the code passes wins over both


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("lookbak_s = 1\n", "unknown setting lookbak_s (did you mean lookback_s?)"),
        ("lookback_s = \n", "config file"),
    ],
)
def test_a_bad_file_is_refused_with_the_reason(
    text: str, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_ENV, str(path))
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        Settings()


def test_a_misspelled_variable_is_refused_with_the_nearest_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HINDSIGHT_LOOKBAK_S", "5")
    with pytest.raises(ConfigError, match=r"HINDSIGHT_LOOKBAK_S \(did you mean HINDSIGHT_LOOKBACK_S\?\)"):
        Settings()


def test_config_show_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HINDSIGHT_API_TOKEN", "s3cr3t")
    monkeypatch.setenv("HINDSIGHT_KAFKA_EXTRA_CONFIG", '{"sasl.password": "hunter2"}')
    path = tmp_path / "c.toml"
    path.write_text("lookback_s = 33\n")
    monkeypatch.setenv(CONFIG_ENV, str(path))  # main() sets it from --config: undone after the test
    assert main(["config", "show", "--json", "--config", str(path)]) == 0
    shown = orjson.loads(capsys.readouterr().out)
    assert shown["lookback_s"] == 33 and shown["api_token"] == "**********"
    assert shown["kafka_extra_config"] == {"sasl.password": "**********"}
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert "s3cr3t" not in text and "hunter2" not in text and "lookback_s" in text
