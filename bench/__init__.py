"""The load benchmark: many simulated phone calls against one real bridge worker.

``python -m bench.load`` runs it (``make bench``); see ``docs/benchmarks.md`` for what it
measures, the definitions of every number, and the results.
"""

import bridge  # noqa: F401  first, before numpy: the benchmarks run with the server's one BLAS thread
