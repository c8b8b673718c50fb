"""``python -m bridge.testing.fake_elevenlabs``: see :mod:`bridge.testing.fake_elevenlabs.cli`."""

from bridge.testing.fake_elevenlabs.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(main())
