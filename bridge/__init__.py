"""bridge: a voice agent on the phone. The packages and their arrows: docs/architecture.md.

numpy's BLAS (OpenBLAS) runs one thread per core by default and splits a matrix product over
them once it is large enough. The bridge's products are small and come from one event loop per
process, with other workers on the other cores: extra BLAS threads only wait and spin. So the
package asks for one BLAS thread unless the environment already says otherwise; it must be set
before numpy is first imported, hence here (measured in docs/benchmarks.md, "Optimisations").
"""

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

__all__: list[str] = []
