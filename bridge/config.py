"""Settings: built-in defaults < ``config/bridge.toml`` < ``.env`` < the environment.

Everything is checked once, at start-up: a bad value stops the server with one line naming the
setting (env var and TOML key), the bad value and what is allowed, instead of failing mid-call.
Secrets (ElevenLabs key, Twilio auth token) never appear in a repr, a log line or an error. Each
setting is a field of a frozen section dataclass whose metadata is the one table the loader and the
tests read. Env names are ``<prefix><KEY>`` (``BRIDGE_VAD_START_MS``, ``ELEVENLABS_SPEED``) but for
PUBLIC_URL, TWILIO_AUTH_TOKEN, BRIDGE_AGENT.

Every default and range is written once. ``[vad]``, ``[barge_in]``, ``[echo]`` and ``[aec]`` *are* the
core's own config dataclasses (`VadConfig`, `BargeInConfig`, `EchoConfig`, `AecConfig`), whose fields carry their range
or choices as metadata (``bridge.core.limits``); ``[playback]`` takes its defaults from the fields
of `CallSettings` and its ranges from ``bridge.core.limits.PLAYBACK``. This module only adds what
a person needs on top: env names, error wording, and the sections that the core knows nothing of."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from bridge.agents.loader import DOTTED_PATH, load_factory
from bridge.agents.scripted import default_script
from bridge.core.aec import AecConfig
from bridge.core.audio import OUTPUT_FORMATS
from bridge.core.bargein import BargeInConfig
from bridge.core.call import CallSettings
from bridge.core.echo import EchoConfig
from bridge.core.limits import CHOICES, HI, LO, PLAYBACK
from bridge.core.turns import TurnConfig
from bridge.core.vad import VadConfig

__all__ = [
    "AGENT_KINDS", "AgentSettings", "CarrierSettings", "ConfigError", "ElevenLabsSettings", "PlaybackSettings",
    "ServerSettings", "Settings", "SttSettings", "load_settings", "redacted",
]

AGENT_KINDS = ("scripted", "openai", "webhook")  # built in; bridge.server.factories builds each, or a dotted path's
_DEFAULT_CONFIG, _USER_SCRIPT = Path("config/bridge.toml"), Path("config/agent.txt")
_SECRET = r"[\x21-\x7e]+"  # printable ASCII, no spaces: all a key or token can hold
_SECRET_RULE: dict[str, Any] = {"allowed": "printable ASCII with no spaces", "regex": _SECRET, "secret": True}
# What a field's metadata may say; the core's fields say only LO/HI or CHOICES, the rest is ours.
_NO_RULE: dict[str, Any] = {"allowed": None, "fix": None, CHOICES: (), LO: None, HI: None, "regex": None,
                            "env": None, "secret": False, "type": None, "when": None, "fallback": None}
_Env = Mapping[str, tuple[str, str]]  # env name -> (value, where it came from)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConfigError(Exception):
    """A setting is missing or invalid. The message is one line and never holds a secret."""


def redacted(secret: str | None) -> str:
    """How a secret may appear in logs: whether it is there, nothing about its value."""
    return "set" if secret else "not set"


def _opt(default: Any, allowed: str | None = None, *, secret: bool = False, **rule: Any) -> Any:
    """One setting: its default and rule (keys of `_NO_RULE`: ``allowed`` words it for errors, ``fix``
    normalises or raises ValueError, ``env`` names it when the generic name does not fit, ``when``
    = (key, value) checks it only while an earlier key of its section has that value, ``fallback``
    gives the value to check when it is unset)."""
    assert rule.keys() <= _NO_RULE.keys(), rule.keys() - _NO_RULE.keys()
    return field(default=default, repr=not secret, metadata={**rule, "allowed": allowed, "secret": secret})


def _rule(f: Field[Any]) -> dict[str, Any]:
    """A field's whole rule, from whatever its metadata says; ``allowed`` is worded from the range
    or choices when the field does not word it (the core's fields never do)."""
    rule = {**_NO_RULE, **f.metadata}
    if rule["allowed"] is None and rule[LO] is not None:
        kind = "a number" if isinstance(f.default, float) else "a whole number"
        rule["allowed"] = f"{kind} from {rule[LO]} to {rule[HI]}"
    elif rule["allowed"] is None:
        rule["allowed"] = "one of " + ", ".join(map(str, rule[CHOICES])) if rule[CHOICES] else "true or false"
    return rule


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {LO: lo, HI: hi}


def _one_of(*choices: Any) -> dict[str, Any]:
    return {CHOICES: choices}


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


def _transfer_numbers(value: str) -> str:
    from bridge.agents.tools import TransferPolicy  # the one rule for what may be dialled

    return ",".join(sorted(TransferPolicy.parse(value).allowed))


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


def _default_script() -> Path:
    """``config/agent.txt`` in the working directory when there is one, else the demo script that
    ships inside the package (so an install outside the repository still starts)."""
    return _USER_SCRIPT if _USER_SCRIPT.is_file() else default_script()


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


_CALL_DEFAULTS = {f.name: f.default for f in fields(CallSettings)}


def _playback(name: str) -> Any:
    """A [playback] setting: the default is the one `CallSettings` gives, the range the core's."""
    lo, hi = PLAYBACK[name]
    return _opt(_CALL_DEFAULTS[name], **_range(lo, hi))


@dataclass(frozen=True, slots=True)
class PlaybackSettings:
    """[playback]: how far ahead of real time the carrier's buffer is kept, and mark spacing."""

    lead_ms: int = _playback("lead_ms")
    low_ms: int = _playback("low_ms")
    mark_every_ms: int = _playback("mark_every_ms")
    message_ms: int = _playback("message_ms")


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """[agent]: who answers the caller."""

    kind: str = _opt("scripted", "scripted, openai, webhook, or package.module:factory", fix=_agent_kind,
                     regex=f"(?i:{'|'.join(AGENT_KINDS)})|{DOTTED_PATH}", env="BRIDGE_AGENT")
    script: Path | None = _opt(None, "an existing UTF-8 text file with a non-empty line", fix=_script,  # noqa: RUF009
                               type=Path, when=("kind", "scripted"), fallback=_default_script)
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
    tools: bool = _opt(True)  # offer the LLM end_call and transfer_call
    transfer_numbers: str | None = _opt(None, "comma-separated E.164 numbers", fix=_transfer_numbers,
                                 env="BRIDGE_TRANSFER_NUMBERS")
    idle_reprompt_s: float = _opt(0.0, **_range(0.0, 3600.0), env="BRIDGE_IDLE_REPROMPT_S")
    idle_hangup_s: float = _opt(0.0, **_range(0.0, 3600.0), env="BRIDGE_IDLE_HANGUP_S")
    idle_prompt: str = _opt("Are you still there?", "any text")
    goodbye: str = _opt("It seems you've stepped away, so I'll end the call now. Goodbye!", "any text")
    voicemail_message: str = _opt("Hello, this is an automated call. Please call us back at your convenience. "
                                  "Goodbye.", "any text")

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
            what = f"scripted ({self.script or default_script()})" if self.kind == "scripted" else self.kind
        stt_url, stt_key = self.stt_endpoint()
        stt = f"; transcription: {self.stt_model} at {stt_url}, key {redacted(stt_key)}" if self.transcribes() else ""
        return f"agent: {what}{stt}"


@dataclass(frozen=True, slots=True)
class SttSettings:
    """[stt]: live transcription while the caller talks (the turn's words are ready when it ends)."""

    engine: str = _opt("none", **_one_of("none", "deepgram"), env="BRIDGE_STT")
    deepgram_api_key: str | None = _opt(None, **_SECRET_RULE, env="DEEPGRAM_API_KEY")
    deepgram_base_url: str = _opt("wss://api.deepgram.com", **_url("ws", "wss"), env="DEEPGRAM_BASE_URL")
    deepgram_model: str = _opt("nova-3", "a model name", regex=r"[!-~]{1,200}")
    language: str | None = _opt(None, "a language code such as en or en-US",
                                regex=r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})?")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """[server]: the HTTP/WebSocket side."""

    public_url: str | None = _opt(None, **_url("http", "https"), env="PUBLIC_URL")
    max_calls: int = _opt(100, **_range(1, 100_000))
    max_load: float = _opt(0.0, **_range(0.0, 1.0))
    log_level: str = _opt("info", **_one_of("debug", "info", "warning", "error", "critical"))
    twilio_auth_token: str | None = _opt(None, **_SECRET_RULE, env="TWILIO_AUTH_TOKEN")
    tts: str = _opt("auto", **_one_of("auto", "elevenlabs", "local"))
    max_message_bytes: int = _opt(64 * 1024, **_range(1024, 16 * 1024 * 1024))
    start_timeout_s: float = _opt(10.0, **_range(0.1, 600.0))
    warm_tts_s: float = _opt(10.0, **_range(0.0, 15.0))
    drain_timeout_s: float = _opt(30.0, **_range(0.0, 3600.0))
    drain_goodbye: str = _opt("Sorry, we have to go now. Goodbye.", "any text")
    admin_token: str | None = _opt(None, **_SECRET_RULE, env="BRIDGE_ADMIN_TOKEN")
    twilio_account_sid: str | None = _opt(None, "AC followed by 32 hex digits", regex=r"AC[0-9a-fA-F]{32}",
                                          env="TWILIO_ACCOUNT_SID")
    twilio_from_number: str | None = _opt(None, "an E.164 number", regex=r"\+[1-9][0-9]{6,14}",
                                          env="TWILIO_FROM_NUMBER")
    twilio_api_base_url: str = _opt("https://api.twilio.com", **_url("http", "https"), env="TWILIO_API_BASE_URL")
    # Call records (bridge.server.records): where they are kept, for how long, and who may read them.
    database_url: str = _opt("sqlite:///bridge.db", "sqlite:///path or postgresql://user:password@host/db",
                             regex=r"(?:sqlite(?:\+aiosqlite)?:///.*|postgres(?:ql)?(?:\+asyncpg)?://\S+)", secret=True)
    record_calls: bool = _opt(True)
    record_audio: bool = _opt(False)
    record_retention_days: int = _opt(30, **_range(1, 36_500))
    recordings_dir: str = _opt("recordings", "a directory path", regex=r".+")


def _networks(value: str) -> str:
    """A comma-separated list of IP addresses or networks (ValueError names the first bad one)."""
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an address or network") from None
    return value


@dataclass(frozen=True, slots=True)
class CarrierSettings:
    """[carriers]: the carriers beside Twilio (docs/carriers.md); each secret turns its signature check on."""

    default: str = _opt("twilio", **_one_of("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel"),
                        env="BRIDGE_CARRIER")
    signalwire_signing_key: str | None = _opt(None, **_SECRET_RULE, env="SIGNALWIRE_SIGNING_KEY")
    telnyx_public_key: str | None = _opt(None, "the portal's base64 Ed25519 public key (44 characters)",
                                         regex=r"[A-Za-z0-9+/]{43}=", env="TELNYX_PUBLIC_KEY")
    plivo_auth_token: str | None = _opt(None, **_SECRET_RULE, env="PLIVO_AUTH_TOKEN")
    vonage_signature_secret: str | None = _opt(None, **_SECRET_RULE, env="VONAGE_SIGNATURE_SECRET")
    vonage_rate: int = _opt(16000, **_one_of(8000, 16000), env="VONAGE_RATE")
    exotel_api_key: str | None = _opt(None, **_SECRET_RULE, env="EXOTEL_API_KEY")
    exotel_api_token: str | None = _opt(None, **_SECRET_RULE, env="EXOTEL_API_TOKEN")
    exotel_allowed_ips: str | None = _opt(None, "IP addresses or networks, comma-separated", fix=_networks,
                                          env="EXOTEL_ALLOWED_IPS")
    exotel_rate: int = _opt(8000, **_one_of(8000, 16000, 24000), env="EXOTEL_RATE")

    def secret(self, carrier: str) -> str | None:
        """The secret that turns ``carrier``'s checks on (None: unchecked); Twilio's lives in [server]."""
        return {"signalwire": self.signalwire_signing_key, "telnyx": self.telnyx_public_key,
                "plivo": self.plivo_auth_token, "vonage": self.vonage_signature_secret,
                "exotel": self.exotel_api_token or self.exotel_allowed_ips}.get(carrier)


_SECTIONS: dict[str, tuple[type[Any], str]] = {  # TOML table -> (section, env prefix)
    "elevenlabs": (ElevenLabsSettings, "ELEVENLABS_"), "vad": (VadConfig, "BRIDGE_VAD_"),
    "barge_in": (BargeInConfig, "BRIDGE_BARGE_IN_"), "echo": (EchoConfig, "BRIDGE_ECHO_"),
    "aec": (AecConfig, "BRIDGE_AEC_"),
    "turn": (TurnConfig, "BRIDGE_TURN_"), "stt": (SttSettings, "BRIDGE_STT_"),
    "playback": (PlaybackSettings, "BRIDGE_PLAYBACK_"), "agent": (AgentSettings, "BRIDGE_AGENT_"),
    "server": (ServerSettings, "BRIDGE_"), "carriers": (CarrierSettings, "BRIDGE_CARRIERS_")}


@dataclass(frozen=True, slots=True)
class Settings:
    """All settings; ``config_file`` is the TOML file they were read from, if any."""

    elevenlabs: ElevenLabsSettings = field(default_factory=ElevenLabsSettings)
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    echo: EchoConfig = field(default_factory=EchoConfig)
    aec: AecConfig = field(default_factory=AecConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    stt: SttSettings = field(default_factory=SttSettings)
    playback: PlaybackSettings = field(default_factory=PlaybackSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    carriers: CarrierSettings = field(default_factory=CarrierSettings)
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
    values: dict[str, Any] = {}
    for f in known.values():
        rule = _rule(f)
        env_name = rule["env"] or prefix + f.name.upper()
        where = f"{env_name} / [{name}] {f.name}"
        needed = rule["when"] is None or values.get(rule["when"][0]) == rule["when"][1]
        if env_name in env:
            values[f.name] = _value(f, env[env_name][0], True, where, env[env_name][1], needed)
        elif f.name in table:
            values[f.name] = _value(f, table[f.name], False, where, path, needed)
        elif f.default is not MISSING:  # a default_factory's value is left to the dataclass
            values[f.name] = f.default
        if needed and rule["fallback"] and values.get(f.name) is None:  # unset, or set empty
            values[f.name] = _value(f, rule["fallback"](), False, where, "the default")
    _check_section(name, values)
    try:
        return cls(**values)
    except ValueError as exc:  # a rule of the core's that no check here words better
        raise ConfigError(f"[{name}]: {exc}") from None


def _check_section(name: str, v: Mapping[str, Any]) -> None:
    """Rules that involve two settings of one section, checked before the core's dataclass sees them
    (its own check would stop start-up too, but without naming the env var and TOML key)."""
    if name == "vad":
        for key in ("start_ms", "end_ms"):
            if v[key] < v["frame_ms"]:
                raise ConfigError(f"BRIDGE_VAD_{key.upper()} / [vad] {key}: got {v[key]}; expected at least one "
                                  f"frame (frame_ms = {v['frame_ms']})")
    if name == "playback" and v["low_ms"] > v["lead_ms"]:
        raise ConfigError(f"BRIDGE_PLAYBACK_LOW_MS / [playback] low_ms: got {v['low_ms']}; expected at most "
                          f"lead_ms ({v['lead_ms']})")


def _value(f: Field[Any], raw: Any, text: bool, where: str, source: str, fix: bool = True) -> Any:
    """Convert one raw value to the setting's type and check it, or raise the one-line error;
    ``fix=False`` skips the field's own check (a script file that the chosen agent never reads)."""
    rule = _rule(f)
    try:
        if (value := _convert(f, raw, text)) is None:
            return None
        if (rule[CHOICES] and value not in rule[CHOICES]) or (rule["regex"] and not re.fullmatch(
                rule["regex"], value)) or (rule[LO] is not None and not rule[LO] <= value <= rule[HI]):
            raise ValueError
        return rule["fix"](value) if rule["fix"] and fix else value
    except ValueError as exc:
        shown = repr(str(raw) if isinstance(raw, Path) else raw)
        shown = "a value (hidden)" if rule["secret"] else shown if len(shown) <= 80 else shown[:77] + "..."
        why = f"{rule['allowed']} ({exc.args[0]})" if exc.args else rule["allowed"]
        raise ConfigError(f"{where} (from {source}): got {shown}; expected {why}") from None


def _convert(f: Field[Any], raw: Any, text: bool) -> Any:
    """A TOML value, or (``text``) an environment string, as the setting's type; else ValueError.

    An empty string unsets an optional setting, as a blank ``KEY=`` in a .env template means, and
    names from a fixed list match case-insensitively ("INFO" is "info")."""
    kind: type[Any] = f.metadata.get("type") or (str if f.default is None else type(f.default))
    if isinstance(raw, Path):
        raw = str(raw)
    if isinstance(raw, str) and (text or kind in (str, Path)):
        raw = raw.strip()
        if kind in (str, Path):
            return (kind(raw.lower() if f.metadata.get(CHOICES) else raw) if raw
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
    """Rules that involve settings of two sections."""
    for broken, message in [
        (s.server.tts == "elevenlabs" and not s.elevenlabs.api_key, "BRIDGE_TTS / [server] tts: got "
         "'elevenlabs'; expected 'auto' or 'local' unless ELEVENLABS_API_KEY / [elevenlabs] api_key is set"),
        (s.stt.engine == "deepgram" and not s.stt.deepgram_api_key, "BRIDGE_STT / [stt] engine: got 'deepgram'; "
         "expected DEEPGRAM_API_KEY / [stt] deepgram_api_key to be set too"),
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
