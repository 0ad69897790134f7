"""HTTP serving of the registered models (Flask under Gunicorn, ONNX Runtime).

Importing this package is cheap: Keras/TensorFlow are only imported when the
app factory loads the bundles.
"""
