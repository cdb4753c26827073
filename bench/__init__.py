"""The benchmarks behind BENCHMARKS.md: each module is a script that measures one part of hybnn
against its targets, writes its section of BENCHMARKS.md and, with ``--json FILE``, the
targets as JSON. Run one from the repository root as ``python -m bench.NAME``."""
