"""Helpers shared by the test folders (tests/<topic>/ keep what only they use): the real
apiserver process and clients of it (`helpers.apiserver`), and polling (`helpers.wait`).
The fixtures made of them are in tests/conftest.py."""
