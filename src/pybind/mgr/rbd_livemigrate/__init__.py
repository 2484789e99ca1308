import os

if 'UNITTEST' not in os.environ:
    from .module import Module  # noqa: F401
