"""Settings: precedence, one-line errors that name the setting, and secrets that never show."""

from __future__ import annotations

import os
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from bridge.config import (
    PROJECT_DIR,
    ConfigError,
    ElevenLabsSettings,
    Settings,
    load_settings,
    redacted,
)

SHIPPED_TOML = PROJECT_DIR / "config" / "bridge.toml"
SECRET = "Zq9Xj7Wv3Kp2Lm8NtR4s"  # no 4-character piece of it occurs in any message by chance
TOKEN = "Hb6Yc1Dg5Fe0Ja3Kd7Qw"

# Every setting: env var, TOML section and key, a valid non-default value as text, and its parsed value.
SETTINGS: list[tuple[str, str, str, str, Any]] = [
    ("ELEVENLABS_API_KEY", "elevenlabs", "api_key", SECRET, SECRET),
    ("ELEVENLABS_VOICE_ID", "elevenlabs", "voice_id", "pNInz6obpgDQGcFmaJgB", "pNInz6obpgDQGcFmaJgB"),
    ("ELEVENLABS_MODEL_ID", "elevenlabs", "model_id", "eleven_turbo_v2_5", "eleven_turbo_v2_5"),
    ("ELEVENLABS_BASE_URL", "elevenlabs", "base_url", "wss://api.eu.residency.elevenlabs.io/",
     "wss://api.eu.residency.elevenlabs.io"),
    ("ELEVENLABS_OUTPUT_FORMAT", "elevenlabs", "output_format", "pcm_16000", "pcm_16000"),
    ("ELEVENLABS_INACTIVITY_TIMEOUT", "elevenlabs", "inactivity_timeout", "60", 60),
    ("ELEVENLABS_SYNC_ALIGNMENT", "elevenlabs", "sync_alignment", "false", False),
    ("ELEVENLABS_AUTO_MODE", "elevenlabs", "auto_mode", "yes", True),
    ("ELEVENLABS_STABILITY", "elevenlabs", "stability", "0.3", 0.3),
    ("ELEVENLABS_SIMILARITY_BOOST", "elevenlabs", "similarity_boost", "1", 1.0),
    ("ELEVENLABS_STYLE", "elevenlabs", "style", "0.25", 0.25),
    ("ELEVENLABS_USE_SPEAKER_BOOST", "elevenlabs", "use_speaker_boost", "0", False),
    ("ELEVENLABS_SPEED", "elevenlabs", "speed", "1.1", 1.1),
    ("BRIDGE_VAD_AGGRESSIVENESS", "vad", "aggressiveness", "2", 2),
    ("BRIDGE_VAD_FRAME_MS", "vad", "frame_ms", "30", 30),
    ("BRIDGE_VAD_START_MS", "vad", "start_ms", "160", 160),
    ("BRIDGE_VAD_END_MS", "vad", "end_ms", "800", 800),
    ("BRIDGE_VAD_WARMUP_MS", "vad", "warmup_ms", "0", 0),
    ("BRIDGE_VAD_SNR_DB", "vad", "snr_db", "0", 0.0),
    ("BRIDGE_VAD_REJECT_TONES", "vad", "reject_tones", "false", False),
    ("BRIDGE_BARGE_IN_CONFIRM_MS", "barge_in", "confirm_ms", "0", 0),
    ("BRIDGE_BARGE_IN_GAP_MS", "barge_in", "gap_ms", "150", 150),
    ("BRIDGE_BARGE_IN_MAX_PAUSE_MS", "barge_in", "max_pause_ms", "5000", 5000),
    ("BRIDGE_ECHO_ENABLED", "echo", "enabled", "off", False),
    ("BRIDGE_ECHO_MAX_DELAY_MS", "echo", "max_delay_ms", "500", 500),
    ("BRIDGE_ECHO_ASSUMED_ERL_DB", "echo", "assumed_erl_db", "6", 6.0),
    ("BRIDGE_ECHO_MARGIN_DB", "echo", "margin_db", "3.5", 3.5),
    ("BRIDGE_ECHO_LEARN_MS", "echo", "learn_ms", "1000", 1000),
    ("BRIDGE_PLAYBACK_LEAD_MS", "playback", "lead_ms", "200", 200),
    ("BRIDGE_PLAYBACK_LOW_MS", "playback", "low_ms", "40", 40),
    ("BRIDGE_PLAYBACK_MARK_EVERY_MS", "playback", "mark_every_ms", "200", 200),
    ("BRIDGE_AGENT", "agent", "kind", "Scripted", "scripted"),
    ("BRIDGE_AGENT_SCRIPT", "agent", "script", "other.txt", Path("other.txt")),
    ("BRIDGE_AGENT_GREETING", "agent", "greeting", "Hi, this is Ada.", "Hi, this is Ada."),
    ("BRIDGE_AGENT_TIMEOUT_S", "agent", "timeout_s", "4.5", 4.5),
    ("BRIDGE_AGENT_APOLOGY", "agent", "apology", "Oops, say again?", "Oops, say again?"),
    ("BRIDGE_AGENT_TURN_END_DIGIT", "agent", "turn_end_digit", "*", "*"),
    ("BRIDGE_AGENT_STT", "agent", "stt", "none", "none"),
    ("BRIDGE_AGENT_SYSTEM_PROMPT", "agent", "system_prompt", "Be brief.", "Be brief."),
    ("OPENAI_BASE_URL", "agent", "openai_base_url", "http://localhost:11434/v1/", "http://localhost:11434/v1"),
    ("OPENAI_API_KEY", "agent", "openai_api_key", SECRET, SECRET),
    ("BRIDGE_AGENT_LLM_MODEL", "agent", "llm_model", "llama3.2:3b", "llama3.2:3b"),
    ("BRIDGE_AGENT_STT_MODEL", "agent", "stt_model", "whisper-large-v3", "whisper-large-v3"),
    ("BRIDGE_AGENT_STT_LANGUAGE", "agent", "stt_language", "de", "de"),
    ("BRIDGE_AGENT_STT_BASE_URL", "agent", "stt_base_url", "http://127.0.0.1:8001/v1", "http://127.0.0.1:8001/v1"),
    ("BRIDGE_AGENT_STT_API_KEY", "agent", "stt_api_key", SECRET, SECRET),
    ("BRIDGE_AGENT_WEBHOOK_URL", "agent", "webhook_url", "https://example.com/agent", "https://example.com/agent"),
    ("BRIDGE_AGENT_WEBHOOK_SECRET", "agent", "webhook_secret", TOKEN, TOKEN),
    ("BRIDGE_AGENT_WEBHOOK_AUDIO", "agent", "webhook_audio", "true", True),
    ("PUBLIC_URL", "server", "public_url", "https://abc.ngrok.app/", "https://abc.ngrok.app"),
    ("BRIDGE_MAX_CALLS", "server", "max_calls", "7", 7),
    ("BRIDGE_LOG_LEVEL", "server", "log_level", "DEBUG", "debug"),
    ("TWILIO_AUTH_TOKEN", "server", "twilio_auth_token", TOKEN, TOKEN),
    ("BRIDGE_TTS", "server", "tts", "local", "local"),
    ("BRIDGE_MAX_MESSAGE_BYTES", "server", "max_message_bytes", "131072", 131072),
    ("BRIDGE_START_TIMEOUT_S", "server", "start_timeout_s", "2.5", 2.5),
    ("BRIDGE_DRAIN_TIMEOUT_S", "server", "drain_timeout_s", "45", 45.0),
    ("BRIDGE_DATABASE_URL", "server", "database_url", "postgresql://b:pw@127.0.0.1:5432/calls",
     "postgresql://b:pw@127.0.0.1:5432/calls"),
    ("BRIDGE_RECORD_CALLS", "server", "record_calls", "false", False),
    ("BRIDGE_RECORD_AUDIO", "server", "record_audio", "true", True),
    ("BRIDGE_RECORD_RETENTION_DAYS", "server", "record_retention_days", "7", 7),
    ("BRIDGE_RECORDINGS_DIR", "server", "recordings_dir", "/var/lib/bridge/wav", "/var/lib/bridge/wav"),
    ("BRIDGE_ADMIN_TOKEN", "server", "admin_token", TOKEN, TOKEN),
]

INVALID: list[tuple[str, str]] = [
    ("ELEVENLABS_VOICE_ID", "has spaces"),
    ("ELEVENLABS_VOICE_ID", ""),
    ("ELEVENLABS_MODEL_ID", "eleven_v3"),
    ("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io"),
    ("ELEVENLABS_BASE_URL", "wss://api.elevenlabs.io/v1"),
    ("ELEVENLABS_OUTPUT_FORMAT", "mp3_44100_128"),
    ("ELEVENLABS_INACTIVITY_TIMEOUT", "0"),
    ("ELEVENLABS_INACTIVITY_TIMEOUT", "181"),
    ("ELEVENLABS_INACTIVITY_TIMEOUT", "20s"),
    ("ELEVENLABS_SYNC_ALIGNMENT", "maybe"),
    ("ELEVENLABS_STABILITY", "1.5"),
    ("ELEVENLABS_SPEED", "0.5"),
    ("ELEVENLABS_SPEED", "nan"),
    ("BRIDGE_VAD_AGGRESSIVENESS", "4"),
    ("BRIDGE_VAD_AGGRESSIVENESS", "2.0"),
    ("BRIDGE_VAD_FRAME_MS", "25"),
    ("BRIDGE_VAD_WARMUP_MS", "-1"),
    ("BRIDGE_BARGE_IN_CONFIRM_MS", "-10"),
    ("BRIDGE_ECHO_MARGIN_DB", "loud"),
    ("BRIDGE_PLAYBACK_LEAD_MS", "lots"),
    ("BRIDGE_AGENT", "llm"),
    ("BRIDGE_AGENT", "no_such_module:factory"),
    ("BRIDGE_AGENT_TURN_END_DIGIT", "##"),
    ("BRIDGE_AGENT_TIMEOUT_S", "0"),
    ("OPENAI_BASE_URL", "https://api.openai.com/v1?key=x"),
    ("BRIDGE_AGENT_STT", "whisper"),
    ("BRIDGE_AGENT_SCRIPT", "missing.txt"),
    ("PUBLIC_URL", "abc.ngrok.app"),
    ("PUBLIC_URL", "https://abc.ngrok.app/twilio/voice"),
    ("PUBLIC_URL", "https://abc.ngrok.app?x=1"),
    ("PUBLIC_URL", "https://abc.ngrok.app:70000"),
    ("BRIDGE_MAX_CALLS", "0"),
    ("BRIDGE_LOG_LEVEL", "verbose"),
    ("BRIDGE_TTS", "polly"),
    ("BRIDGE_MAX_MESSAGE_BYTES", "100"),
    ("BRIDGE_START_TIMEOUT_S", "0"),
    ("BRIDGE_DRAIN_TIMEOUT_S", "-1"),
    ("BRIDGE_RECORD_RETENTION_DAYS", "0"),
]

TOML_KEY = {env: f"[{section}] {key}" for env, section, key, _, _ in SETTINGS}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no config/bridge.toml, no .env, no config/agent.txt."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_toml(workdir: Path, text: str) -> Path:
    (workdir / "config").mkdir(exist_ok=True)
    path = workdir / "config" / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(environ: dict[str, str], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(environ, dotenv=False, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


def value_of(settings: Settings, section: str, key: str) -> Any:
    return getattr(getattr(settings, section), key)


# ---------------------------------------------------------------------------- defaults and sources


def test_defaults_without_any_file(workdir: Path) -> None:
    settings = load_settings({}, dotenv=False)
    assert settings.config_file is None
    # The default script is not in this directory, so the checkout's copy is used.
    assert settings.agent.script == PROJECT_DIR / "config" / "agent.txt"
    assert settings == Settings(agent=settings.agent)
    assert settings.elevenlabs.api_key is None and settings.server.tts == "auto"


def test_shipped_toml_holds_exactly_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(PROJECT_DIR)
    settings = load_settings({}, dotenv=False)
    assert settings.config_file == Path("config/bridge.toml")
    assert settings == Settings(config_file=settings.config_file)


def test_shipped_toml_lists_every_setting_with_its_env_var_and_comments_out_secrets() -> None:
    text = SHIPPED_TOML.read_text(encoding="utf-8")
    table = tomllib.loads(text)
    for env, section, key, _, _ in SETTINGS:
        # secrets, or settings with no default to show, stay commented out in the shipped file
        unset = key in ("api_key", "twilio_auth_token", "public_url", "openai_api_key", "webhook_secret",
                        "greeting", "stt_language", "webhook_url", "stt_base_url", "stt_api_key",
                        "admin_token")
        assert (key not in table[section]) if unset else (key in table[section]), key
        lines = [line for line in text.splitlines() if line.lstrip("# ").startswith(f"{key} =")]
        assert len(lines) == 1 and f"[{env}]" in lines[0], key
    assert sum(len(fields(getattr(Settings(), section))) for section in table) == len(SETTINGS)


@pytest.mark.parametrize(("env", "section", "key", "text", "parsed"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_every_setting_from_the_environment(
    workdir: Path, env: str, section: str, key: str, text: str, parsed: Any
) -> None:
    (workdir / "other.txt").write_text("Hi.\n", encoding="utf-8")
    assert value_of(load_settings({env: text}, dotenv=False), section, key) == parsed


@pytest.mark.parametrize(("env", "section", "key", "text", "parsed"), SETTINGS, ids=[s[0] for s in SETTINGS])
def test_every_setting_from_toml(
    workdir: Path, env: str, section: str, key: str, text: str, parsed: Any
) -> None:
    (workdir / "other.txt").write_text("Hi.\n", encoding="utf-8")
    if isinstance(parsed, bool):
        literal = str(parsed).lower()
    else:
        literal = f'"{text}"' if isinstance(parsed, str | Path) else repr(parsed)
    write_toml(workdir, f"[{section}]\n{key} = {literal}\n")
    assert value_of(load_settings({}, dotenv=False), section, key) == parsed


def test_precedence_defaults_toml_dotenv_environment(workdir: Path) -> None:
    write_toml(workdir, '[elevenlabs]\nvoice_id = "fromtoml"\nmodel_id = "toml_model"\nspeed = 0.9\n'
                        "[vad]\nend_ms = 700\n")
    (workdir / ".env").write_text("ELEVENLABS_VOICE_ID=fromdotenv\nELEVENLABS_MODEL_ID=dotenv_model\n")
    settings = load_settings({"ELEVENLABS_VOICE_ID": "fromenv"})
    assert settings.elevenlabs.voice_id == "fromenv"  # environment beats .env and TOML
    assert settings.elevenlabs.model_id == "dotenv_model"  # .env beats TOML
    assert settings.elevenlabs.speed == 0.9 and settings.vad.end_ms == 700  # TOML beats defaults
    assert settings.vad.start_ms == 100  # the default
    assert load_settings({}, dotenv=False).elevenlabs.voice_id == "fromtoml"


def test_dotenv_never_touches_os_environ(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_VOICE_ID", raising=False)
    (workdir / ".env").write_text("ELEVENLABS_VOICE_ID=fromdotenv\n")
    monkeypatch.setenv("BRIDGE_MAX_CALLS", "3")
    settings = load_settings()
    assert settings.elevenlabs.voice_id == "fromdotenv" and settings.server.max_calls == 3
    assert "ELEVENLABS_VOICE_ID" not in os.environ


def test_bridge_config_names_the_toml_file(workdir: Path) -> None:
    other = workdir / "elsewhere.toml"
    other.write_text("[server]\nmax_calls = 9\n")
    write_toml(workdir, "[server]\nmax_calls = 5\n")
    assert load_settings({"BRIDGE_CONFIG": str(other)}, dotenv=False).server.max_calls == 9
    (workdir / ".env").write_text(f"BRIDGE_CONFIG={other}\n")
    assert load_settings({}).server.max_calls == 9
    assert load_settings({"BRIDGE_CONFIG": str(other)}, config_path=workdir / "config" / "bridge.toml",
                         dotenv=False).server.max_calls == 5
    message = error_for({"BRIDGE_CONFIG": "nowhere.toml"})
    assert "BRIDGE_CONFIG" in message and "nowhere.toml" in message


def test_empty_values_unset_optional_settings(workdir: Path) -> None:
    blank = {"ELEVENLABS_API_KEY": "", "PUBLIC_URL": " ", "TWILIO_AUTH_TOKEN": ""}
    settings = load_settings(blank, dotenv=False)
    assert settings.elevenlabs.api_key is None and settings.server.public_url is None
    assert settings.server.twilio_auth_token is None


def test_voice_settings_for_the_first_message_of_a_context() -> None:
    assert ElevenLabsSettings().voice_settings() == {
        "stability": 0.5, "similarity_boost": 0.75, "style": 0.0, "use_speaker_boost": True, "speed": 1.0}


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("env", "value"), INVALID, ids=[f"{e}={v}" for e, v in INVALID])
def test_invalid_environment_values_give_one_line_naming_them(workdir: Path, env: str, value: str) -> None:
    message = error_for({env: value})
    assert env in message and TOML_KEY[env] in message
    assert repr(value.strip()) in message and "expected" in message


@pytest.mark.parametrize(("line", "key"), [
    ('[vad]\naggressiveness = "3"', "[vad] aggressiveness"),
    ("[vad]\naggressiveness = true", "[vad] aggressiveness"),
    ("[vad]\nstart_ms = 100.0", "[vad] start_ms"),
    ("[elevenlabs]\nsync_alignment = 1", "[elevenlabs] sync_alignment"),
    ('[elevenlabs]\nspeed = "fast"', "[elevenlabs] speed"),
    ("[elevenlabs]\nvoice_id = 12", "[elevenlabs] voice_id"),
    ("[server]\npublic_url = []", "[server] public_url"),
    ("[playback]\nlead_ms = 100\nlow_ms = 150", "[playback] low_ms"),
])
def test_invalid_toml_values_name_the_key(workdir: Path, line: str, key: str) -> None:
    write_toml(workdir, line + "\n")
    assert key in error_for({})


def test_settings_that_depend_on_each_other(workdir: Path) -> None:
    assert "BRIDGE_VAD_START_MS" in error_for({"BRIDGE_VAD_START_MS": "10"})
    assert "frame_ms = 30" in error_for({"BRIDGE_VAD_FRAME_MS": "30", "BRIDGE_VAD_END_MS": "20"})
    assert "BRIDGE_PLAYBACK_LOW_MS" in error_for({"BRIDGE_PLAYBACK_LOW_MS": "220"})
    message = error_for({"BRIDGE_TTS": "elevenlabs"})
    assert "BRIDGE_TTS" in message and "ELEVENLABS_API_KEY" in message


@pytest.mark.parametrize(("content", "why"), [
    (b"", None), (b"\n   \n\t\n", None), (b"\xff\xfe caf\xe9\n", "not UTF-8"),
])
def test_agent_script_is_checked_at_load(workdir: Path, content: bytes, why: str | None) -> None:
    (workdir / "script.txt").write_bytes(content)
    message = error_for({"BRIDGE_AGENT_SCRIPT": "script.txt"})
    assert "BRIDGE_AGENT_SCRIPT" in message and "[agent] script" in message and "script.txt" in message
    assert why is None or why in message


def test_unknown_toml_keys_and_sections_are_errors(workdir: Path) -> None:
    write_toml(workdir, "[vad]\nagressiveness = 2\n")
    message = error_for({})
    assert "[vad] agressiveness" in message and "aggressiveness" in message
    write_toml(workdir, "[voice]\nspeed = 1.0\n")
    assert "'voice'" in error_for({})
    write_toml(workdir, 'voice_id = "x"\n')
    assert "'voice_id'" in error_for({})


def test_malformed_toml_names_the_file_and_line(workdir: Path) -> None:
    path = write_toml(workdir, '[elevenlabs]\nvoice_id = "ok"\nmodel_id = \n')
    message = error_for({})
    assert str(path.relative_to(workdir)) in message and "line 3" in message


def test_unreadable_toml(workdir: Path) -> None:
    path = write_toml(workdir, "")
    path.write_bytes(b"[vad]\nend_ms = 600 # \xff\n")
    assert "bridge.toml" in error_for({})


# ---------------------------------------------------------------------------- secrets


def pieces(secret: str) -> list[str]:
    return [secret[i : i + 4] for i in range(len(secret) - 3)]


def assert_hidden(text: str) -> None:
    for piece in pieces(SECRET) + pieces(TOKEN):
        assert piece not in text


def test_secrets_never_in_repr_str_or_describe(workdir: Path) -> None:
    settings = load_settings({"ELEVENLABS_API_KEY": SECRET, "TWILIO_AUTH_TOKEN": TOKEN}, dotenv=False)
    assert settings.elevenlabs.api_key == SECRET and settings.server.twilio_auth_token == TOKEN
    shown = (repr(settings), str(settings), repr(settings.elevenlabs), str(settings.server))
    for text in (*shown, *settings.describe()):
        assert_hidden(text)
    described = "\n".join(settings.describe())
    assert "API key set" in described and "Twilio auth token: set" in described
    assert redacted(SECRET) == "set" and redacted(None) == "not set" and redacted("") == "not set"


@pytest.mark.parametrize("environ", [
    {"ELEVENLABS_API_KEY": SECRET[:10] + " " + SECRET[10:]},
    {"ELEVENLABS_API_KEY": SECRET + "\n" + TOKEN},
    {"TWILIO_AUTH_TOKEN": TOKEN + "\x00"},
])
def test_secrets_never_in_errors(workdir: Path, environ: dict[str, str]) -> None:
    message = error_for(environ)
    assert next(iter(environ)) in message and "hidden" in message
    assert_hidden(message)


def test_secrets_never_in_errors_from_toml(workdir: Path) -> None:
    write_toml(workdir, f"[elevenlabs]\napi_key = {list(SECRET)}\n")
    assert_hidden(error_for({}))
    write_toml(workdir, f'[server]\ntwilio_auth_token = "{TOKEN} x"\n')
    assert_hidden(error_for({}))


def test_describe_names_what_an_operator_needs(workdir: Path) -> None:
    lines = load_settings({"PUBLIC_URL": "https://abc.ngrok.app"}, dotenv=False).describe()
    text = "\n".join(lines)
    for expected in ("21m00Tcm4TlvDq8ikWAM", "eleven_flash_v2_5", "ulaw_8000", "scripted", "local",
                     "https://abc.ngrok.app", "API key not set", "Twilio auth token: not set"):
        assert expected in text
