"""The audio input devices PortAudio sees: the lazy ``sounddevice`` import, ``--list-devices``, picking a
device by index or name, and the capture format (rate, channels, sample type) a device is opened with.

``sounddevice`` is imported only when a function here is called, so importing this module costs nothing
without a microphone. ALSA/PortAudio print probing chatter on fd 2; it is held back (and quoted in errors
where useful) unless ``$AURICLE_AUDIO_DEBUG`` is set. :class:`edge.microphone.Microphone` is the capture
itself.
"""
from __future__ import annotations

import sys
from types import ModuleType
from typing import TypedDict, cast

from edge.cstreams import captured_c_stderr
from edge.errors import AudioError

__all__ = ["import_sounddevice", "list_input_devices", "format_device_list", "resolve_input_device",
           "choose_format", "DeviceInfo", "InputDevice", "AUDIO_DEBUG_ENV", "COMMON_RATES"]

AUDIO_DEBUG_ENV = "AURICLE_AUDIO_DEBUG"   # set it to see ALSA/PortAudio's own messages
COMMON_RATES = (48000, 44100, 32000, 96000, 88200, 24000, 22050)


class DeviceInfo(TypedDict, total=False):
    """What PortAudio reports about one device (``sounddevice.query_devices(index)``)."""
    name: str
    index: int
    hostapi: int
    max_input_channels: int
    max_output_channels: int
    default_low_input_latency: float
    default_high_input_latency: float
    default_samplerate: float


class InputDevice(TypedDict):
    """One line of ``--list-devices``."""
    index: int
    name: str
    channels: int
    default_samplerate: float
    default: bool


def import_sounddevice() -> ModuleType:
    """Import sounddevice lazily; turn a missing PortAudio into a one-line fix."""
    if "sounddevice" in sys.modules:
        return sys.modules["sounddevice"]
    try:
        with captured_c_stderr(AUDIO_DEBUG_ENV):
            import sounddevice
    except OSError as exc:
        raise AudioError(f"the PortAudio library was not found ({exc}); install it: `sudo apt install "
                         "libportaudio2` (Debian, Ubuntu, Raspberry Pi OS)") from None
    except ImportError:
        raise AudioError("the sounddevice package is not installed; `pip install sounddevice` "
                         "(it also needs `sudo apt install libportaudio2`)") from None
    return sounddevice


def list_input_devices() -> list[InputDevice]:
    sd = import_sounddevice()
    with captured_c_stderr(AUDIO_DEBUG_ENV):
        devices = sd.query_devices()
        try:
            default_in = sd.default.device[0]
        except Exception:
            default_in = -1
    out: list[InputDevice] = []
    for d in devices:
        if d["max_input_channels"] > 0:
            out.append({"index": d["index"], "name": d["name"], "channels": d["max_input_channels"],
                        "default_samplerate": d["default_samplerate"], "default": d["index"] == default_in})
    return out


def format_device_list() -> str:
    devices = list_input_devices()
    if not devices:
        return ("no audio input devices found (check `arecord -l`, plug in a microphone, or define an "
                "ALSA pcm in ~/.asoundrc)")
    lines = ["input devices (use --device ID or a unique part of the NAME; * = default):"]
    for d in devices:
        mark = "*" if d["default"] else " "
        lines.append(f"{mark} {d['index']:>3}  {d['name']}  ({d['channels']} ch, default "
                     f"{d['default_samplerate']:.0f} Hz)")
    return "\n".join(lines)


def resolve_input_device(sd: ModuleType, device: int | str | None) -> DeviceInfo:
    hint = "run `python -m edge.listen --list-devices` to see them"
    if device is None:
        try:
            with captured_c_stderr(AUDIO_DEBUG_ENV):
                return cast(DeviceInfo, dict(sd.query_devices(kind="input")))
        except Exception:
            names = [d["name"] for d in list_input_devices()]
            if names:
                raise AudioError(f"no default audio input device; pass --device with one of: "
                                 f"{', '.join(repr(n) for n in names)}") from None
            raise AudioError("no audio input device found: PortAudio sees no microphone; plug one in and "
                             "check `arecord -l`, or pass --file WAV") from None
    key: int | str = device
    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        key = int(device)
    try:
        with captured_c_stderr(AUDIO_DEBUG_ENV):
            info = cast(DeviceInfo, dict(sd.query_devices(key)))
    except (ValueError, sd.PortAudioError) as exc:
        raise AudioError(f"unknown --device {device!r} ({' '.join(str(exc).split())}); {hint}") from None
    if info.get("max_input_channels", 0) < 1:
        raise AudioError(f"--device {device!r} ({info.get('name')}) has no inputs; {hint}")
    return info


def _supports(sd: ModuleType, index: int, rate: int, channels: int, dtype: str) -> bool:
    try:
        with captured_c_stderr(AUDIO_DEBUG_ENV):
            sd.check_input_settings(device=index, samplerate=rate, channels=channels, dtype=dtype)
        return True
    except Exception:
        return False


def choose_format(sd: ModuleType, info: DeviceInfo, model_rate: int) -> tuple[int, int, str]:
    """(rate, channels, dtype): the model rate if the device has it, else its native rate (resampled later).

    16-bit samples are preferred: what most microphones deliver, half the queue memory, and converted to
    float exactly as a 16-bit WAV file is (so a recording replays bit-identically).
    """
    index = int(info["index"])
    channel_options = [1] + ([2] if info["max_input_channels"] >= 2 else [])
    native = int(round(info.get("default_samplerate") or 0))
    rates = [model_rate] + [r for r in (native, *COMMON_RATES) if r > model_rate]
    seen: list[int] = []
    for rate in rates:
        if rate in seen:
            continue
        seen.append(rate)
        for ch in channel_options:
            for dtype in ("int16", "float32"):
                if _supports(sd, index, rate, ch, dtype):
                    return rate, ch, dtype
    raise AudioError(f"input device {info['name']!r} supports none of {', '.join(map(str, seen))} Hz (its "
                     f"default is {native} Hz); the model needs {model_rate} Hz or more -- pick another "
                     "--device, or use an ALSA `plug` device (e.g. plughw:CARD) that converts rates")
