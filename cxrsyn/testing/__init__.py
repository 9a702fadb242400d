"""Helpers for tests and benchmarks, public for users' own: dataset layouts as their owners ship them, filled
with phantom radiographs (``datasets``), and a local HTTP server speaking the Gemini wire format
(``fake_gemini``). No product module imports this package (an import-linter contract checks it)."""
