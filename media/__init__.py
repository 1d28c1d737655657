"""Decoding and validation of untrusted media (SPEC §6)."""
