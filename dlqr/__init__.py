"""The contract that training and serving share.

- :mod:`dlqr.card`: :class:`~dlqr.card.ModelCard` (what a model takes and returns) and
  the registry of cards; :mod:`dlqr.cards` holds one card file per model.
- :mod:`dlqr.tasks`: one object per kind of output (regression, binary, multiclass) that
  owns post-processing, the output schema, prediction metrics and golden comparison.
- :mod:`dlqr.bundle`: the on-disk artifact bundle (files, manifest, sha256 verification).
- :mod:`dlqr.processing`: pure pre-/post-processing functions over NumPy arrays.

This package imports neither ``training`` nor ``serving``; both import it.
Nothing heavy is imported here (no Keras, no ONNX Runtime).
"""
