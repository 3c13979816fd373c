"""Side-by-side benchmarks of airloop's hot paths against peers and floors.

``make bench`` (``scripts/bench.sh``) runs :mod:`benchmarks.run`, which starts one
module per comparison in its own process and writes ``benchmarks/results/``.
"""
