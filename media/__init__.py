"""Decoding and validation of untrusted media."""
