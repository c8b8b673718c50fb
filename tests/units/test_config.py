"""Settings: precedence, one-line errors that name the setting, and secrets that never show."""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.agents.scripted import ScriptedAgent, default_script, load_script
from bridge.config import (
    ConfigError,
    ElevenLabsSettings,
    Settings,
    load_settings,
    redacted,
)
from bridge.core.aec import AecConfig
from bridge.core.bargein import BargeInConfig
from bridge.core.call import CallSettings
from bridge.core.echo import EchoConfig
from bridge.core.limits import CHOICES, HI, LO, PLAYBACK
from bridge.core.turns import TurnConfig
from bridge.core.vad import VadConfig
from bridge.server.app import create_app
from bridge.server.factories import make_agent

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TOML = REPO / "config" / "bridge.toml"
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
    ("BRIDGE_BARGE_IN_COMMIT_MS", "barge_in", "commit_ms", "250", 250),
    ("BRIDGE_TURN_CANDIDATE_MS", "turn", "candidate_ms", "150", 150),
    ("BRIDGE_TURN_PREEMPTIVE", "turn", "preemptive", "off", False),
    ("BRIDGE_TURN_MIN_MS", "turn", "min_ms", "250", 250),
    ("BRIDGE_TURN_MAX_MS", "turn", "max_ms", "2000", 2000),
    ("BRIDGE_TURN_CONFIDENT", "turn", "confident", "0.7", 0.7),
    ("BRIDGE_TURN_CONFIDENT_AUDIO", "turn", "confident_audio", "0.95", 0.95),
    ("BRIDGE_TURN_MODEL", "turn", "model", "on", True),
    ("BRIDGE_STT", "stt", "engine", "none", "none"),
    ("DEEPGRAM_API_KEY", "stt", "deepgram_api_key", SECRET, SECRET),
    ("DEEPGRAM_BASE_URL", "stt", "deepgram_base_url", "ws://127.0.0.1:8002", "ws://127.0.0.1:8002"),
    ("BRIDGE_STT_DEEPGRAM_MODEL", "stt", "deepgram_model", "nova-2", "nova-2"),
    ("BRIDGE_STT_LANGUAGE", "stt", "language", "en-US", "en-US"),
    ("BRIDGE_ECHO_ENABLED", "echo", "enabled", "off", False),
    ("BRIDGE_ECHO_MAX_DELAY_MS", "echo", "max_delay_ms", "500", 500),
    ("BRIDGE_ECHO_ASSUMED_ERL_DB", "echo", "assumed_erl_db", "6", 6.0),
    ("BRIDGE_ECHO_MARGIN_DB", "echo", "margin_db", "3.5", 3.5),
    ("BRIDGE_ECHO_LEARN_MS", "echo", "learn_ms", "1000", 1000),
    ("BRIDGE_AEC_MODE", "aec", "mode", "OFF", "off"),
    ("BRIDGE_AEC_ENGAGE_ERL_DB", "aec", "engage_erl_db", "30", 30.0),
    ("BRIDGE_AEC_TAIL_MS", "aec", "tail_ms", "600", 600),
    ("BRIDGE_AEC_PROBE_MS", "aec", "probe_ms", "800", 800),
    ("BRIDGE_AEC_MAX_ENGAGED", "aec", "max_engaged", "8", 8),
    ("BRIDGE_PLAYBACK_LEAD_MS", "playback", "lead_ms", "200", 200),
    ("BRIDGE_PLAYBACK_LOW_MS", "playback", "low_ms", "40", 40),
    ("BRIDGE_PLAYBACK_MARK_EVERY_MS", "playback", "mark_every_ms", "200", 200),
    ("BRIDGE_PLAYBACK_MESSAGE_MS", "playback", "message_ms", "60", 60),
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
    ("BRIDGE_AGENT_TOOLS", "agent", "tools", "false", False),
    ("BRIDGE_TRANSFER_NUMBERS", "agent", "transfer_numbers", "+442079460000, +15550001111",
     "+15550001111,+442079460000"),
    ("BRIDGE_IDLE_REPROMPT_S", "agent", "idle_reprompt_s", "8", 8.0),
    ("BRIDGE_IDLE_HANGUP_S", "agent", "idle_hangup_s", "20", 20.0),
    ("BRIDGE_AGENT_IDLE_PROMPT", "agent", "idle_prompt", "Hello?", "Hello?"),
    ("BRIDGE_AGENT_GOODBYE", "agent", "goodbye", "Bye now.", "Bye now."),
    ("BRIDGE_AGENT_VOICEMAIL_MESSAGE", "agent", "voicemail_message", "Call us back.", "Call us back."),
    ("PUBLIC_URL", "server", "public_url", "https://abc.ngrok.app/", "https://abc.ngrok.app"),
    ("BRIDGE_MAX_CALLS", "server", "max_calls", "7", 7),
    ("BRIDGE_MAX_LOAD", "server", "max_load", "0.75", 0.75),
    ("BRIDGE_LOG_LEVEL", "server", "log_level", "DEBUG", "debug"),
    ("TWILIO_AUTH_TOKEN", "server", "twilio_auth_token", TOKEN, TOKEN),
    ("BRIDGE_TTS", "server", "tts", "local", "local"),
    ("BRIDGE_MAX_MESSAGE_BYTES", "server", "max_message_bytes", "131072", 131072),
    ("BRIDGE_START_TIMEOUT_S", "server", "start_timeout_s", "2.5", 2.5),
    ("BRIDGE_WARM_TTS_S", "server", "warm_tts_s", "0", 0.0),
    ("BRIDGE_DRAIN_TIMEOUT_S", "server", "drain_timeout_s", "45", 45.0),
    ("BRIDGE_DRAIN_GOODBYE", "server", "drain_goodbye", "We are closing.", "We are closing."),
    ("BRIDGE_ADMIN_TOKEN", "server", "admin_token", TOKEN, TOKEN),
    ("TWILIO_ACCOUNT_SID", "server", "twilio_account_sid", "AC" + "a1" * 16, "AC" + "a1" * 16),
    ("TWILIO_FROM_NUMBER", "server", "twilio_from_number", "+15550001111", "+15550001111"),
    ("TWILIO_API_BASE_URL", "server", "twilio_api_base_url", "http://127.0.0.1:9/", "http://127.0.0.1:9"),
    ("BRIDGE_CARRIER", "carriers", "default", "Vonage", "vonage"),
    ("SIGNALWIRE_SIGNING_KEY", "carriers", "signalwire_signing_key", TOKEN, TOKEN),
    ("TELNYX_PUBLIC_KEY", "carriers", "telnyx_public_key", "A" * 43 + "=", "A" * 43 + "="),
    ("PLIVO_AUTH_TOKEN", "carriers", "plivo_auth_token", TOKEN, TOKEN),
    ("VONAGE_SIGNATURE_SECRET", "carriers", "vonage_signature_secret", TOKEN, TOKEN),
    ("VONAGE_RATE", "carriers", "vonage_rate", "8000", 8000),
    ("EXOTEL_API_KEY", "carriers", "exotel_api_key", "exotel-key", "exotel-key"),
    ("EXOTEL_API_TOKEN", "carriers", "exotel_api_token", TOKEN, TOKEN),
    ("EXOTEL_ALLOWED_IPS", "carriers", "exotel_allowed_ips", "10.0.0.0/8, 1.2.3.4", "10.0.0.0/8, 1.2.3.4"),
    ("EXOTEL_RATE", "carriers", "exotel_rate", "16000", 16000),
    ("BRIDGE_DATABASE_URL", "server", "database_url", "postgresql://b:pw@127.0.0.1:5432/calls",
     "postgresql://b:pw@127.0.0.1:5432/calls"),
    ("BRIDGE_RECORD_CALLS", "server", "record_calls", "false", False),
    ("BRIDGE_RECORD_AUDIO", "server", "record_audio", "true", True),
    ("BRIDGE_RECORD_RETENTION_DAYS", "server", "record_retention_days", "7", 7),
    ("BRIDGE_RECORDINGS_DIR", "server", "recordings_dir", "/var/lib/bridge/wav", "/var/lib/bridge/wav"),
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
    ("BRIDGE_AEC_MODE", "sometimes"),
    ("BRIDGE_AEC_MAX_ENGAGED", "-1"),
    ("BRIDGE_AEC_PROBE_MS", "50"),
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
    ("BRIDGE_MAX_LOAD", "1.5"),
    ("BRIDGE_MAX_LOAD", "-0.1"),
    ("BRIDGE_LOG_LEVEL", "verbose"),
    ("BRIDGE_TTS", "polly"),
    ("BRIDGE_MAX_MESSAGE_BYTES", "100"),
    ("BRIDGE_START_TIMEOUT_S", "0"),
    ("BRIDGE_DRAIN_TIMEOUT_S", "-1"),
    ("BRIDGE_TRANSFER_NUMBERS", "+15550001111,1-900-PREMIUM"),
    ("BRIDGE_IDLE_HANGUP_S", "-5"),
    ("TWILIO_ACCOUNT_SID", "not-a-sid"),
    ("TWILIO_FROM_NUMBER", "5550001111"),
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
    # No config/agent.txt in this directory, so the scripted agent reads the demo script shipped in the package.
    assert settings.agent.script == default_script() and default_script().is_file()
    assert replace(settings, agent=replace(settings.agent, script=None)) == Settings()
    assert settings.elevenlabs.api_key is None and settings.server.tts == "auto"


def test_shipped_toml_holds_exactly_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    settings = load_settings({}, dotenv=False)
    assert settings.config_file == Path("config/bridge.toml")
    assert settings.agent.script == default_script()  # the repository has no config/agent.txt of its own
    assert replace(settings, agent=replace(settings.agent, script=None)) == Settings(config_file=settings.config_file)


def test_shipped_toml_lists_every_setting_with_its_env_var_and_comments_out_secrets() -> None:
    text = SHIPPED_TOML.read_text(encoding="utf-8")
    table = tomllib.loads(text)
    for env, section, key, _, _ in SETTINGS:
        # secrets, or settings with no default to show, stay commented out in the shipped file
        unset = key in ("api_key", "twilio_auth_token", "public_url", "openai_api_key", "webhook_secret",
                        "greeting", "stt_language", "script", "webhook_url", "stt_base_url", "stt_api_key",
                        "transfer_numbers", "admin_token", "twilio_account_sid", "twilio_from_number",
                        "signalwire_signing_key", "telnyx_public_key", "plivo_auth_token", "vonage_signature_secret",
                        "exotel_api_key", "exotel_api_token", "exotel_allowed_ips", "deepgram_api_key",
                        "language")
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
    assert "BRIDGE_PLAYBACK_LOW_MS" in error_for({"BRIDGE_PLAYBACK_LOW_MS": "320"})
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


# ---------------------------------------------------------------------------- one source per setting

# The core's own config dataclasses, and the config section that exposes each; [playback] exposes
# fields of CallSettings, whose ranges live in bridge.core.limits.PLAYBACK.
CORE_SECTIONS: dict[str, type[Any]] = {"vad": VadConfig, "barge_in": BargeInConfig, "echo": EchoConfig,
                                       "aec": AecConfig, "turn": TurnConfig}
PREFIX = {"vad": "BRIDGE_VAD_", "barge_in": "BRIDGE_BARGE_IN_", "echo": "BRIDGE_ECHO_", "aec": "BRIDGE_AEC_",
          "turn": "BRIDGE_TURN_",
          "playback": "BRIDGE_PLAYBACK_"}


@dataclass(frozen=True)
class CoreRule:
    """One core setting as the core writes it: its default, and its range or choices (none for a flag)."""

    section: str
    key: str
    default: Any
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def env(self) -> str:
        return PREFIX[self.section] + self.key.upper()


def core_rules() -> list[CoreRule]:
    rules = [CoreRule(section, f.name, f.default, f.metadata.get(LO), f.metadata.get(HI), f.metadata.get(CHOICES, ()))
             for section, cls in CORE_SECTIONS.items() for f in fields(cls)]
    call_defaults = {f.name: f.default for f in fields(CallSettings)}
    rules += [CoreRule("playback", key, call_defaults[key], lo, hi) for key, (lo, hi) in PLAYBACK.items()]
    return rules


RULES = core_rules()
RANGED = [r for r in RULES if r.lo is not None]
CHOSEN = [r for r in RULES if r.choices]


def companions(rule: CoreRule, value: Any) -> dict[str, str]:
    """Other settings that let ``value`` stand alone: rules across settings (start_ms at least one
    frame, low_ms at most lead_ms) are checked elsewhere, this test is about one setting's range."""
    if rule.section == "vad" and rule.key in ("start_ms", "end_ms"):
        return {"BRIDGE_VAD_FRAME_MS": "10"}
    if rule.section == "playback" and rule.key == "low_ms":
        return {"BRIDGE_PLAYBACK_LEAD_MS": str(min(max(value, 200), PLAYBACK["lead_ms"][1]))}
    if rule.section == "playback" and rule.key == "lead_ms":
        return {"BRIDGE_PLAYBACK_LOW_MS": str(min(value, 100))}
    return {}


def loaded(rule: CoreRule, value: Any) -> Any:
    environ = {rule.env: str(value), **companions(rule, value)}
    return value_of(load_settings(environ, dotenv=False), rule.section, rule.key)


def test_the_config_sections_are_exactly_the_core_settings() -> None:
    """No turn-taking or playback setting that the core lacks, none of the core's left out."""
    for section in PREFIX:
        assert [f.name for f in fields(getattr(Settings(), section))] == [r.key for r in RULES if r.section == section]


def test_every_numeric_core_setting_declares_its_range() -> None:
    """A new field of VadConfig, BargeInConfig or EchoConfig becomes a setting at once: it must say
    what values it takes (``bridge.core.limits.within`` or ``one_of``), or it could not be checked."""
    unruled = [f"{r.section}.{r.key}" for r in RULES if not isinstance(r.default, bool) and r.lo is None
               and not r.choices]
    assert not unruled


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.section}.{r.key}" for r in RULES])
def test_each_default_is_the_cores(workdir: Path, rule: CoreRule) -> None:
    assert value_of(load_settings({}, dotenv=False), rule.section, rule.key) == rule.default
    assert value_of(Settings(), rule.section, rule.key) == rule.default


@pytest.mark.parametrize("rule", RANGED, ids=[f"{r.section}.{r.key}" for r in RANGED])
def test_each_range_is_the_cores(workdir: Path, rule: CoreRule) -> None:
    """The loader takes both ends of the core's range and refuses just beyond each, naming the setting."""
    assert rule.lo is not None and rule.hi is not None
    step = 0.5 if isinstance(rule.default, float) else 1
    assert loaded(rule, rule.lo) == rule.lo and loaded(rule, rule.hi) == rule.hi
    for beyond in (rule.lo - step, rule.hi + step):
        assert rule.env in error_for({rule.env: str(beyond), **companions(rule, beyond)}), beyond


@pytest.mark.parametrize("rule", CHOSEN, ids=[f"{r.section}.{r.key}" for r in CHOSEN])
def test_each_choice_list_is_the_cores(workdir: Path, rule: CoreRule) -> None:
    assert [loaded(rule, choice) for choice in rule.choices] == list(rule.choices)
    outside = "-".join(map(str, rule.choices)) if isinstance(rule.default, str) else str(max(rule.choices) + 1)
    assert rule.env in error_for({rule.env: outside})


@pytest.mark.parametrize("section", CORE_SECTIONS)
def test_the_core_takes_every_value_the_config_lets_through(section: str) -> None:
    """The ends of each range and every choice build the core's config (its own checks agree), so a
    value that passes start-up can never fail a call."""
    for rule in (r for r in RULES if r.section == section):
        for value in (rule.lo, rule.hi, *rule.choices):
            if value is not None:
                extra = {"frame_ms": 10} if section == "vad" and rule.key != "frame_ms" else {}
                CORE_SECTIONS[section](**{rule.key: value, **extra})


# ---------------------------------------------------------------------------- the first minutes: start-up anywhere

KINDS: list[dict[str, str]] = [
    {},
    {"BRIDGE_AGENT": "openai", "OPENAI_API_KEY": SECRET},
    {"BRIDGE_AGENT": "openai", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"},
    {"BRIDGE_AGENT": "webhook", "BRIDGE_AGENT_WEBHOOK_URL": "https://example.com/agent"},
    {"BRIDGE_AGENT": "tests.units.test_agents:plugin_factory"},
]


@pytest.mark.parametrize("environ", KINDS, ids=["scripted", "openai", "openai-local", "webhook", "dotted-path"])
async def test_every_agent_kind_starts_outside_the_repository(workdir: Path, environ: dict[str, str]) -> None:
    """An installed bridge, run from any directory with nothing but its environment, starts and
    builds its agent: no config/agent.txt is needed, and only the scripted agent reads a script."""
    assert not (workdir / "config").exists() and REPO not in workdir.parents
    settings = load_settings(environ, dotenv=False)
    assert settings.config_file is None
    agent = make_agent(settings)
    if settings.agent.kind == "scripted":
        assert settings.agent.script == default_script()
        assert agent.inner.line_for(0) == default_script().read_text(encoding="utf-8").splitlines()[0]
    else:
        assert settings.agent.script is None
    await agent.aclose()


def test_only_the_scripted_agent_needs_its_script(workdir: Path) -> None:
    webhook = {"BRIDGE_AGENT": "webhook", "BRIDGE_AGENT_WEBHOOK_URL": "https://example.com/agent"}
    assert load_settings({**webhook, "BRIDGE_AGENT_SCRIPT": "missing.txt"}, dotenv=False).agent.kind == "webhook"
    message = error_for({"BRIDGE_AGENT_SCRIPT": "missing.txt"})
    assert "BRIDGE_AGENT_SCRIPT" in message and "'missing.txt'" in message and "no such file" in message


def test_the_scripted_agent_reads_config_agent_txt_when_there_is_one(workdir: Path) -> None:
    (workdir / "config").mkdir()
    (workdir / "config" / "agent.txt").write_text("Hello from my own script.\nIt answers.\n", encoding="utf-8")
    settings = load_settings({}, dotenv=False)
    assert settings.agent.script == Path("config/agent.txt")
    assert ScriptedAgent(load_script(settings.agent.script)).line_for(0) == "Hello from my own script."
    (workdir / "named.txt").write_text("Named.\n", encoding="utf-8")
    assert load_settings({"BRIDGE_AGENT_SCRIPT": "named.txt"}, dotenv=False).agent.script == Path("named.txt")
    assert load_settings({"BRIDGE_AGENT_SCRIPT": ""}, dotenv=False).agent.script == Path("config/agent.txt")


def test_the_demo_script_ships_inside_the_package() -> None:
    """A wheel holds only the package data pyproject.toml names; without the script an installed
    scripted agent would have nothing to say."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert default_script().name in package_data["package-data"]["bridge.agents"]
    assert default_script().parent == REPO / "bridge" / "agents" and len(load_script(None)) >= 2


async def health_and_warnings(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, Any], list[str]]:
    """/healthz of the started app (its lifespan run, as a server runs it), and the WARNING lines
    its start-up logged (the ``bridge`` logger does not propagate once the app configured it, so
    the capture hangs on the app's own logger)."""
    logger, app = logging.getLogger("bridge.server.app"), create_app(settings)
    logger.addHandler(caplog.handler)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
            health = await client.get("/healthz")
    finally:
        logger.removeHandler(caplog.handler)
    assert health.status_code == 200
    return health.json(), [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_no_elevenlabs_key_is_said_loudly_at_start_up_and_in_healthz(
    workdir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    health, warnings = await health_and_warnings(load_settings({}, dotenv=False), caplog)
    assert [w for w in warnings if "ELEVENLABS_API_KEY" in w and "offline" in w]
    assert health["voice"] == "local"
    assert "ELEVENLABS_API_KEY" in health["warning"] and "offline" in health["warning"]


@pytest.mark.parametrize(("environ", "voice"), [
    ({"ELEVENLABS_API_KEY": SECRET}, "elevenlabs"), ({"BRIDGE_TTS": "local"}, "local"),
], ids=["key", "local-on-purpose"])
async def test_the_voice_asked_for_raises_no_warning(
    workdir: Path, caplog: pytest.LogCaptureFixture, environ: dict[str, str], voice: str
) -> None:
    health, warnings = await health_and_warnings(load_settings(environ, dotenv=False), caplog)
    assert health["voice"] == voice and health["warning"] is None
    assert not [w for w in warnings if "ELEVENLABS_API_KEY" in w]
    assert_hidden(str(health))
