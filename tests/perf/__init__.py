"""Side-by-side benchmarks (issue 7): ``nox -s perf`` runs :mod:`tests.perf.bench`."""
