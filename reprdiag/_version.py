"""The package version, in a module of its own so that any layer (and ``--version``) can read it
without importing the package's public API (and torch with it)."""

__version__ = "0.1.0"
