"""Settings: built-in defaults < ``config/bridge.toml`` < ``.env`` < the environment.

Everything is checked once, at start-up: a bad value stops the server with one line naming the
setting (env var and TOML key), the bad value and what is allowed, instead of failing mid-call.
Secrets (ElevenLabs key, Twilio auth token) never appear in a repr, a log line or an error. Each
setting is a field of a frozen section dataclass whose metadata is the one table the loader and the
tests read. Env names are ``<prefix><KEY>`` (``BRIDGE_VAD_START_MS``, ``ELEVENLABS_SPEED``) but for
PUBLIC_URL, TWILIO_AUTH_TOKEN, BRIDGE_AGENT."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from bridge.agents.loader import DOTTED_PATH, load_factory
from bridge.core.audio import OUTPUT_FORMATS

__all__ = [
    "AGENT_KINDS", "AgentSettings", "BargeInSettings", "ConfigError", "EchoSettings", "ElevenLabsSettings",
    "PlaybackSettings", "ServerSettings", "Settings", "VadSettings", "load_settings", "redacted",
]

AGENT_KINDS = ("scripted", "openai", "webhook")  # built in; bridge.server.factories builds each, or a dotted path's
PROJECT_DIR = Path(__file__).resolve().parent.parent
_DEFAULT_CONFIG, _DEFAULT_SCRIPT = Path("config/bridge.toml"), Path("config/agent.txt")
_SECRET = r"[\x21-\x7e]+"  # printable ASCII, no spaces: all a key or token can hold
_SECRET_RULE: dict[str, Any] = {"allowed": "printable ASCII with no spaces", "regex": _SECRET, "secret": True}
_Env = Mapping[str, tuple[str, str]]  # env name -> (value, where it came from)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line and never holds a secret."""


def redacted(secret: str | None) -> str:
    """How a secret may appear in logs: whether it is there, nothing about its value."""
    return "set" if secret else "not set"


def _opt(default: Any, allowed: str = "true or false", *, fix: Callable[[Any], Any] | None = None,
         choices: tuple[Any, ...] = (), lo: float | None = None, hi: float = 0, regex: str | None = None,
         env: str | None = None, secret: bool = False) -> Any:
    """One setting: default, rule (``allowed`` words it for errors; ``fix`` normalises or raises
    ValueError) and env name when the generic one does not fit."""
    rule = {"allowed": allowed, "fix": fix, "choices": choices, "lo": lo, "hi": hi, "regex": regex}
    return field(default=default, repr=not secret, metadata={**rule, "env": env, "secret": secret})


def _range(lo: float, hi: float) -> dict[str, Any]:
    kind = "a number" if isinstance(lo, float) else "a whole number"
    return {"allowed": f"{kind} from {lo} to {hi}", "lo": lo, "hi": hi}


def _one_of(*choices: Any) -> dict[str, Any]:
    return {"allowed": "one of " + ", ".join(map(str, choices)), "choices": choices}


def _url(*schemes: str) -> dict[str, Any]:
    """scheme://host[:port] and nothing after it but an optional "/", which is dropped."""
    port = r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    host = rf"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\]){port}/?"
    return {"allowed": f"{schemes[-1]}://host[:port] ({' or '.join(schemes)}) with no path or query",
            "regex": f"(?:{'|'.join(schemes)})://{host}", "fix": lambda v: v.rstrip("/")}


def _endpoint(*schemes: str) -> dict[str, Any]:
    """Like `_url`, but a path may follow the host (an API base or a webhook), still no query."""
    rule = _url(*schemes)
    return {**rule, "allowed": f"{schemes[-1]}://host[:port][/path] ({' or '.join(schemes)}) with no query",
            "regex": rule["regex"].removesuffix("/?") + r"(?:/[^\s?#]*)?"}


def _agent_kind(value: str) -> str:
    """A built-in agent's name in any case, or a dotted path that imports (else ValueError, why)."""
    if value.lower() in AGENT_KINDS:
        return value.lower()
    load_factory(value)
    return value


DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, helpful voice assistant on a phone call. Your words are spoken aloud, so answer "
    "in one to three short sentences of plain conversational speech: no lists, no markdown, no emoji, and "
    "spell out numbers and symbols. If the conversation has no message yet, the call has just begun: greet "
    "the caller in one short sentence."
)


def _script(value: Path) -> Path:
    try:
        text = value.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        bad = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or "unreadable").lower()
        raise ValueError(bad) from None
    return value if text.strip() else _ensure(False, value)


@dataclass(frozen=True, slots=True)
class ElevenLabsSettings:
    """[elevenlabs]: the multi-context TTS socket (shared/protocols.md §1)."""

    api_key: str | None = _opt(None, **_SECRET_RULE)
    voice_id: str = _opt("21m00Tcm4TlvDq8ikWAM", "1-64 letters, digits, _ or -", regex=r"[A-Za-z0-9_-]{1,64}")
    model_id: str = _opt("eleven_flash_v2_5", "a model id such as eleven_flash_v2_5 (not eleven_v3: the "
                         "multi-context endpoint refuses it)", regex=r"(?!eleven_v3$)[A-Za-z0-9_.-]{1,64}")
    base_url: str = _opt("wss://api.elevenlabs.io", **_url("ws", "wss"))
    output_format: str = _opt("ulaw_8000", **_one_of(*OUTPUT_FORMATS))
    inactivity_timeout: int = _opt(180, **_range(1, 180))
    sync_alignment: bool = _opt(True)
    auto_mode: bool = _opt(False)
    stability: float = _opt(0.5, **_range(0.0, 1.0))
    similarity_boost: float = _opt(0.75, **_range(0.0, 1.0))
    style: float = _opt(0.0, **_range(0.0, 1.0))
    use_speaker_boost: bool = _opt(True)
    speed: float = _opt(1.0, **_range(0.7, 1.2))

    def voice_settings(self) -> dict[str, float | bool]:
        """The ``voice_settings`` object of a context's first message."""
        return {"stability": self.stability, "similarity_boost": self.similarity_boost, "style": self.style,
                "use_speaker_boost": self.use_speaker_boost, "speed": self.speed}


@dataclass(frozen=True, slots=True)
class VadSettings:
    """[vad]: when the caller counts as speaking (see ``bridge.core.vad``)."""

    aggressiveness: int = _opt(3, **_one_of(0, 1, 2, 3))
    frame_ms: int = _opt(20, **_one_of(10, 20, 30))
    start_ms: int = _opt(100, **_range(10, 10_000))
    end_ms: int = _opt(600, **_range(10, 60_000))
    warmup_ms: int = _opt(200, **_range(0, 10_000))
    snr_db: float = _opt(6.0, **_range(0.0, 40.0))
    reject_tones: bool = _opt(True)


@dataclass(frozen=True, slots=True)
class BargeInSettings:
    """[barge_in]: soft barge-in, pause first and give up only when the caller keeps talking (``core.bargein``)."""

    confirm_ms: int = _opt(250, **_range(0, 5_000))
    gap_ms: int = _opt(200, **_range(20, 5_000))
    max_pause_ms: int = _opt(2_000, **_range(100, 60_000))


@dataclass(frozen=True, slots=True)
class EchoSettings:
    """[echo]: the echo guard, so the agent's own voice coming back never counts as the caller (``core.echo``)."""

    enabled: bool = _opt(True)
    max_delay_ms: int = _opt(300, **_range(0, 2_000))
    assumed_erl_db: float = _opt(10.0, **_range(0.0, 60.0))
    margin_db: float = _opt(4.0, **_range(0.0, 30.0))
    learn_ms: int = _opt(300, **_range(0, 10_000))


@dataclass(frozen=True, slots=True)
class PlaybackSettings:
    """[playback]: how far ahead of real time the carrier's buffer is kept, and mark spacing."""

    lead_ms: int = _opt(200, **_range(20, 10_000))
    low_ms: int = _opt(100, **_range(0, 10_000))
    mark_every_ms: int = _opt(200, **_range(20, 60_000))


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """[agent]: who answers the caller."""

    kind: str = _opt("scripted", "scripted, openai, webhook, or package.module:factory", fix=_agent_kind,
                     regex=f"(?i:{'|'.join(AGENT_KINDS)})|{DOTTED_PATH}", env="BRIDGE_AGENT")
    script: Path = _opt(_DEFAULT_SCRIPT, "an existing UTF-8 text file with a non-empty line", fix=_script)  # noqa: RUF009
    greeting: str | None = _opt(None, "any text")
    timeout_s: float = _opt(10.0, **_range(0.5, 600.0))
    apology: str = _opt("Sorry, I'm having trouble answering right now. Could you say that again?", "any text")
    turn_end_digit: str = _opt("#", **_one_of("#", "*", *"0123456789", "off"))
    stt: str = _opt("auto", **_one_of("auto", "openai", "none"))
    system_prompt: str = _opt(DEFAULT_SYSTEM_PROMPT, "any text")
    openai_base_url: str = _opt("https://api.openai.com/v1", **_endpoint("http", "https"), env="OPENAI_BASE_URL")
    openai_api_key: str | None = _opt(None, **_SECRET_RULE, env="OPENAI_API_KEY")
    llm_model: str = _opt("gpt-4o-mini", "a model name", regex=r"[!-~]{1,200}")
    stt_model: str = _opt("whisper-1", "a model name", regex=r"[!-~]{1,200}")
    stt_language: str | None = _opt(None, "an ISO 639-1 code such as en", regex=r"[a-z]{2,3}")
    stt_base_url: str | None = _opt(None, **_endpoint("http", "https"))
    stt_api_key: str | None = _opt(None, **_SECRET_RULE)
    webhook_url: str | None = _opt(None, **_endpoint("http", "https"), secret=True)  # its path may be a token
    webhook_secret: str | None = _opt(None, **_SECRET_RULE)
    webhook_audio: bool = _opt(False)

    def transcribes(self) -> bool:
        """Whether turns are transcribed: ``stt = "auto"`` means only for the openai agent."""
        return self.stt == "openai" or (self.stt == "auto" and self.kind == "openai")

    def stt_endpoint(self) -> tuple[str, str | None]:
        """Where transcription goes, and its key: the chat API's unless ``stt_base_url`` is set
        (then ``stt_api_key``, so the chat API's key never travels to another host)."""
        if self.stt_base_url:
            return self.stt_base_url, self.stt_api_key
        return self.openai_base_url, self.openai_api_key

    def describe(self) -> str:
        if self.kind == "openai":
            what = f"openai, model {self.llm_model} at {self.openai_base_url}, API key {redacted(self.openai_api_key)}"
        elif self.kind == "webhook":
            host = (self.webhook_url or "").split("/")[2] if self.webhook_url else "not set"
            what = f"webhook to {host}, " + ("signed" if self.webhook_secret else "UNSIGNED (no webhook_secret)")
        else:
            what = f"{self.kind} ({self.script})" if self.kind == "scripted" else self.kind
        stt_url, stt_key = self.stt_endpoint()
        stt = f"; transcription: {self.stt_model} at {stt_url}, key {redacted(stt_key)}" if self.transcribes() else ""
        return f"agent: {what}{stt}"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """[server]: the HTTP/WebSocket side."""

    public_url: str | None = _opt(None, **_url("http", "https"), env="PUBLIC_URL")
    max_calls: int = _opt(100, **_range(1, 100_000))
    log_level: str = _opt("info", **_one_of("debug", "info", "warning", "error", "critical"))
    twilio_auth_token: str | None = _opt(None, **_SECRET_RULE, env="TWILIO_AUTH_TOKEN")
    tts: str = _opt("auto", **_one_of("auto", "elevenlabs", "local"))
    max_message_bytes: int = _opt(64 * 1024, **_range(1024, 16 * 1024 * 1024))
    start_timeout_s: float = _opt(10.0, **_range(0.1, 600.0))
    drain_timeout_s: float = _opt(30.0, **_range(0.0, 3600.0))
    # Call records (bridge.server.records): where they are kept, for how long, and who may read them.
    database_url: str = _opt("sqlite:///bridge.db", "sqlite:///path or postgresql://user:password@host/db",
                             regex=r"(?:sqlite(?:\+aiosqlite)?:///.*|postgres(?:ql)?(?:\+asyncpg)?://\S+)", secret=True)
    record_calls: bool = _opt(True)
    record_audio: bool = _opt(False)
    record_retention_days: int = _opt(30, **_range(1, 36_500))
    recordings_dir: str = _opt("recordings", "a directory path", regex=r".+")
    admin_token: str | None = _opt(None, **_SECRET_RULE)


_SECTIONS: dict[str, tuple[type[Any], str]] = {  # TOML table -> (section, env prefix)
    "elevenlabs": (ElevenLabsSettings, "ELEVENLABS_"), "vad": (VadSettings, "BRIDGE_VAD_"),
    "barge_in": (BargeInSettings, "BRIDGE_BARGE_IN_"), "echo": (EchoSettings, "BRIDGE_ECHO_"),
    "playback": (PlaybackSettings, "BRIDGE_PLAYBACK_"), "agent": (AgentSettings, "BRIDGE_AGENT_"),
    "server": (ServerSettings, "BRIDGE_")}


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings; ``config_file`` is the TOML file they were read from, if any."""

    elevenlabs: ElevenLabsSettings = field(default_factory=ElevenLabsSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    barge_in: BargeInSettings = field(default_factory=BargeInSettings)
    echo: EchoSettings = field(default_factory=EchoSettings)
    playback: PlaybackSettings = field(default_factory=PlaybackSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    config_file: Path | None = None

    def describe(self) -> list[str]:
        """Lines for the start-up log; secrets appear only as "set" / "not set"."""
        el, server, engine = self.elevenlabs, self.server, self.server.tts
        if engine == "auto":
            engine = "auto: " + ("elevenlabs (API key set)" if el.api_key else "local (no ElevenLabs key)")
        return [
            f"config file: {self.config_file or 'none (defaults and environment)'}",
            f"TTS engine: {engine}",
            f"ElevenLabs: voice {el.voice_id}, model {el.model_id}, format {el.output_format}, "
            f"{el.base_url}, API key {redacted(el.api_key)}",
            self.agent.describe(),
            f"public URL: {server.public_url or 'not set (derived from each request)'}",
            f"Twilio auth token: {redacted(server.twilio_auth_token)}; max calls: {server.max_calls}",
        ]


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_path: str | Path | None = None, dotenv: bool = True
) -> Settings:
    """Read, merge and check every setting; raise `ConfigError` naming the first bad one.

    ``.env`` (current directory) never overrides a real environment variable and is read without
    touching ``os.environ``. TOML: ``config_path``, else ``BRIDGE_CONFIG``, else ``config/bridge.toml``."""
    found = dotenv_values(Path(".env")) if dotenv else {}
    env = {k: (v, ".env") for k, v in found.items() if v is not None}
    env.update((k, (v, "the environment")) for k, v in (os.environ if environ is None else environ).items())
    path, table = _read_toml(config_path, env)
    sections = {name: _section(name, table.get(name, {}), env, str(path)) for name in _SECTIONS}
    settings = Settings(**sections, config_file=path)
    _check_together(settings)
    return settings


def _read_toml(config_path: str | Path | None, env: _Env) -> tuple[Path | None, dict[str, Any]]:
    """The TOML file's tables, checked for unknown sections; env values are (value, source) pairs."""
    what = "config file"
    if config_path is None and "BRIDGE_CONFIG" in env:
        config_path, what = env["BRIDGE_CONFIG"][0], f"BRIDGE_CONFIG (from {env['BRIDGE_CONFIG'][1]})"
    elif config_path is None and not _DEFAULT_CONFIG.is_file():
        return None, {}
    path = Path(config_path or _DEFAULT_CONFIG)
    try:
        table = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {str(path)!r} ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for name, value in table.items():
        if name not in _SECTIONS or not isinstance(value, dict):
            raise ConfigError(f"{path}: top-level key {name!r} is not allowed; settings go in the "
                              f"tables [{'], ['.join(_SECTIONS)}]")
    return path, table


def _section(name: str, table: Mapping[str, Any], env: _Env, path: str) -> Any:
    """One section's values: the environment (or .env) wins over the TOML file, which wins over defaults."""
    cls, prefix = _SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    if unknown := sorted(table.keys() - known.keys()):
        raise ConfigError(f"{path}: unknown key [{name}] {unknown[0]}; known keys: {', '.join(known)}")
    values = {}
    for f in known.values():
        env_name = f.metadata["env"] or prefix + f.name.upper()
        where = f"{env_name} / [{name}] {f.name}"
        if env_name in env:
            values[f.name] = _value(f, env[env_name][0], True, where, env[env_name][1])
        elif f.name in table:
            values[f.name] = _value(f, table[f.name], False, where, path)
        elif isinstance(f.default, Path):  # a default file must exist too; the checkout's copy will do
            near = PROJECT_DIR / f.default
            default = near if not f.default.exists() and near.exists() else f.default
            values[f.name] = _value(f, default, False, where, "the default")
    return cls(**values)


def _value(f: Field[Any], raw: Any, text: bool, where: str, source: str) -> Any:
    """Convert one raw value to the setting's type and check it, or raise the one-line error."""
    rule = f.metadata
    try:
        if (value := _convert(f, raw, text)) is None:
            return None
        if (rule["choices"] and value not in rule["choices"]) or (rule["regex"] and not re.fullmatch(
                rule["regex"], value)) or (rule["lo"] is not None and not rule["lo"] <= value <= rule["hi"]):
            raise ValueError
        return rule["fix"](value) if rule["fix"] else value
    except ValueError as exc:
        shown = repr(str(raw) if isinstance(raw, Path) else raw)
        shown = "a value (hidden)" if rule["secret"] else shown if len(shown) <= 80 else shown[:77] + "..."
        why = f"{rule['allowed']} ({exc.args[0]})" if exc.args else rule["allowed"]
        raise ConfigError(f"{where} (from {source}): got {shown}; expected {why}") from None


def _convert(f: Field[Any], raw: Any, text: bool) -> Any:
    """A TOML value, or (``text``) an environment string, as the setting's type; else ValueError.

    An empty string unsets an optional setting, as a blank ``KEY=`` in a .env template means, and
    names from a fixed list match case-insensitively ("INFO" is "info")."""
    kind: type[Any] = Path if isinstance(f.default, Path) else str if f.default is None else type(f.default)
    if isinstance(raw, str) and (text or kind in (str, Path)):
        raw = raw.strip()
        if kind in (str, Path):
            return (kind(raw.lower() if f.metadata["choices"] else raw) if raw
                    else _ensure(f.default is None, None))
        if kind is bool:
            return _ensure(raw.lower() in _TRUE + _FALSE, raw.lower() in _TRUE)
        try:
            raw = int(raw) if kind is int else float(raw)
        except ValueError:
            raise ValueError from None
    ok = isinstance(raw, int | float) if kind is float else isinstance(raw, kind)
    if not ok or isinstance(raw, bool) != (kind is bool):
        raise ValueError
    return _ensure(kind not in (int, float) or math.isfinite(raw), kind(raw))


def _ensure(ok: bool, value: Any) -> Any:
    if not ok:
        raise ValueError
    return value


def _check_together(s: Settings) -> None:
    """Rules that involve two settings."""
    vad, play, frame = s.vad, s.playback, f"expected at least one frame (frame_ms = {s.vad.frame_ms})"
    for broken, message in [
        (vad.start_ms < vad.frame_ms, f"BRIDGE_VAD_START_MS / [vad] start_ms: got {vad.start_ms}; {frame}"),
        (vad.end_ms < vad.frame_ms, f"BRIDGE_VAD_END_MS / [vad] end_ms: got {vad.end_ms}; {frame}"),
        (play.low_ms > play.lead_ms, f"BRIDGE_PLAYBACK_LOW_MS / [playback] low_ms: got {play.low_ms}; "
         f"expected at most lead_ms ({play.lead_ms})"),
        (s.server.tts == "elevenlabs" and not s.elevenlabs.api_key, "BRIDGE_TTS / [server] tts: got "
         "'elevenlabs'; expected 'auto' or 'local' unless ELEVENLABS_API_KEY / [elevenlabs] api_key is set"),
        (s.agent.kind == "webhook" and not s.agent.webhook_url, "BRIDGE_AGENT / [agent] kind: got 'webhook'; "
         "expected BRIDGE_AGENT_WEBHOOK_URL / [agent] webhook_url to be set too"),
        (s.agent.kind == "openai" and not s.agent.openai_api_key and "api.openai.com" in s.agent.openai_base_url,
         "OPENAI_API_KEY / [agent] openai_api_key: not set; expected a key for api.openai.com (or "
         "OPENAI_BASE_URL pointing at a server that needs none)"),
        (s.agent.transcribes() and not s.agent.stt_endpoint()[1] and "api.openai.com" in s.agent.stt_endpoint()[0],
         "OPENAI_API_KEY / [agent] openai_api_key: not set; transcription at api.openai.com needs a key (or set "
         "BRIDGE_AGENT_STT_BASE_URL to a server that needs none)"),
    ]:
        if broken:
            raise ConfigError(message)
