"""Model catalog, export (torch/keras -> ONNX) and run-time sessions.

``models.export`` may import torch, transformers and tensorflow; everything else in this package
imports only numpy, onnxruntime, PIL and bentoml, so the serving path stays lean.
"""
