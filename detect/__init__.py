"""The detection core: per modality, decode -> preprocess -> predict -> aggregate -> result.

It knows nothing of how models are hosted: pipelines hand whole batches to a ``ModelClient``
(``detect/model_clients.py``), with one adapter for ``bentoml serve`` and one for a single process
(the AWS Lambda handler). Nothing here knows HTTP either: routes (``api/``) parse the request and
call ``detect_image`` / ``detect_audio`` / ``detect_video`` with the bytes.
"""
