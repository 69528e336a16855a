"""Measurements, one module each: `inference`, `runtimes`, `distillation`, `memory`, `data_pipeline`; `run` is
`riformer-bench`. Nothing in the library imports this package."""
