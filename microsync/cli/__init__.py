"""The ``microsync`` command: parse arguments, call the public API, render with rich."""
