"""Helpers the tests share: stand-in servers for what a real one cannot be made to do, a real Prefect server, random adapters."""
