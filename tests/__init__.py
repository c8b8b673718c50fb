"""The test suite. ``bridge`` first, before numpy: tests run with the server's one BLAS thread."""

import bridge  # noqa: F401
