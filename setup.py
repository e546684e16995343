"""Builds cnbert. Metadata and pinned dependencies live in pyproject.toml."""
from setuptools import setup

setup()
