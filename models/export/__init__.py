"""Export-time code: torch / transformers / tensorflow -> ONNX, verified and stored.

Never imported by the serving path: ``service.py`` and everything it imports must run
without torch or tensorflow installed.
"""
