"""bevctl: build, check, start and watch BEVFusion-style training runs.

This package must stay cheap to import: no torch, no docker, no pydantic at module level.
"""

__version__ = "0.1.0"
