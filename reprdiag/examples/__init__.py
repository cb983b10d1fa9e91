"""Small example models for ``reprdiag analyze --model package.module:factory``."""
