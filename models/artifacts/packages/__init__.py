"""Roboflow's current model registry: model *packages* and the ``inference-models`` cache layout.

Roboflow's current stack asks ``/models/v1/external/weights`` for a model's packages (ONNX,
TorchScript, TensorRT, ...), picks the best one the box can run and keeps it under
``MODEL_CACHE_DIR/models-cache/<slug>/<packageId>/`` with the bytes in ``shared-blobs/<md5>``.
This package speaks that API (:mod:`.client`), chooses a package (:mod:`.selection`, given what
``models.engines.box`` says this box runs), reads and writes that layout (:mod:`.layout`,
:mod:`.store`) and turns ``inference_config.json`` into pre-processing (:mod:`.inference_config`).
The model is built from a package in ``models.resolution.package_loader``.

May import: ``models.common``, ``models.identity``, ``models.maths``, ``models.artifacts``.
"""
