"""Benchmarks of VisionCraftAI: `make bench` runs `python -m bench.run`. Not part of `make test`."""
