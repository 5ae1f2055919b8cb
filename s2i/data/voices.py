"""How a TTS voice is named in the manifests: ``<engine>:<voice>``, and a bare name is an espeak-ng voice.

Stage A records the voice of every spoken caption. Manifests written before there was more than one engine
hold bare espeak-ng voice names (``en-us+f3``); a voice of any other engine carries its engine's name in
front (``flite:awb``, ``festival:kal_diphone``). Stage F groups its numbers by engine with :func:`engine_of`.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ENGINE", "engine_of", "qualified_voice", "split_voice"]

DEFAULT_ENGINE = "espeak-ng"
_SEPARATOR = ":"


def split_voice(voice: str) -> tuple[str, str]:
    """``(engine, voice within the engine)`` of a recorded voice name; a bare name is espeak-ng's.

    Raises:
        ValueError: an empty engine or voice (``":awb"``, ``"flite:"``).
    """
    engine, sep, name = voice.partition(_SEPARATOR)
    if not sep:
        engine, name = DEFAULT_ENGINE, voice
    if not engine or not name:
        raise ValueError(f"voice {voice!r}: expected '<engine>:<voice>' (e.g. flite:awb) or a bare espeak-ng voice")
    return engine, name


def engine_of(voice: str) -> str:
    """The TTS engine of a recorded voice name (:func:`split_voice`)."""
    return split_voice(voice)[0]


def qualified_voice(engine: str, name: str) -> str:
    """The recorded name of ``name`` of ``engine``: bare for espeak-ng (as manifests always had it)."""
    if not engine or not name or _SEPARATOR in engine:
        raise ValueError(f"engine {engine!r} and voice {name!r} must be non-empty and the engine without ':'")
    return name if engine == DEFAULT_ENGINE else f"{engine}{_SEPARATOR}{name}"
