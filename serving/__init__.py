"""HTTP serving for the wine, seizure and digit models (Flask under Gunicorn).

Importing this package is cheap: Keras/TensorFlow are only imported when the
app factory loads the bundles.
"""
