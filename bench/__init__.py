"""Benchmarks of the chat function as production runs it; `./bench.sh` is the entry point."""
