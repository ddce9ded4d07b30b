"""Crash-consistency tests: SIGKILL a two-rank writer anywhere in the commit protocol."""
