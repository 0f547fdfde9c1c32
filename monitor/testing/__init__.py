"""Test helpers shipped with the package: traffic generators for tests and benchmarks."""
