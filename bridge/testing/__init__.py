"""Local stand-ins for the cloud services, faithful to their protocols, for tests and benchmarks."""

__all__: list[str] = []
