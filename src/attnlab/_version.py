"""The package version: one place, read by the package, `attnlab info` and the build (pyproject.toml)."""

__version__ = "0.1.0"
