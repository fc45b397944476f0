"""Integration tests: real modelport servers as subprocesses, driven over real HTTP."""
