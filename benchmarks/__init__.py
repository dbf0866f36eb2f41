"""Benchmarks of lambda_keras: layer, peer (timm), model and export suites;
see benchmarks/README.md.

Run `python -m benchmarks.run [--quick] [--only layer,peer,model,export] [--out DIR]` from the
repository root (`make bench`, `make bench QUICK=1`).
"""
