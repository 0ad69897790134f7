"""WSGI entry point for Gunicorn: ``gunicorn --config serving/gunicorn.conf.py serving.wsgi:app``.

Only calls the factory. Imported in each worker after fork (the config sets
``preload_app = False``), so every worker loads and self-tests its own models
and runs its own repository watcher (hot swap, :func:`serving.registry.start_watcher`).
"""

from serving.app import create_app

app = create_app({"WATCH": True})
