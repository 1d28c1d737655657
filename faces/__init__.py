"""Face detection (MTCNN on ONNX Runtime) and face crops: serving path, no TensorFlow."""

from faces.crops import face_crops
from faces.mtcnn import Face, FaceDetector

__all__ = ["Face", "FaceDetector", "face_crops"]
