# The two commands of the README. Each sets up what it needs (bin/bootstrap.sh) and is safe to run again.
.PHONY: demo test bootstrap lint bench

bootstrap:
	bash bin/bootstrap.sh

# 1. The main job on its embedded default: DirectRunner, bundled example pages, bundled models.
demo: bootstrap
	.venv/bin/kiebeam extract --demo

# 2. The test suite (lint first: a lint error fails the build like a failing test).
test: bootstrap
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

# Benchmarks (not tests): prints markdown tables with the machine; ~10 minutes on 2 CPU cores.
bench: bootstrap
	.venv/bin/python bench/bench_pipeline.py --json out/bench.json

lint: bootstrap
	.venv/bin/ruff check .
