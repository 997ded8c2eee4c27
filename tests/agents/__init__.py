"""Scripted stand-ins for agent CLIs, run by the tests as child processes, and tests of the adapters they imitate."""
