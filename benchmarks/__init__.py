"""Benchmarks of lambda_keras: the layer, peer (timm), model, export and backends suites of
`make bench`, and the formulation, paired and sequence suites; see benchmarks/README.md.

Run `python -m benchmarks.run [--quick] [--only layer,peer,model,export,backends] [--out DIR]`
from the repository root (`make bench`, `make bench QUICK=1`).
"""
