"""The HTTP API (docs/api.md): FastAPI routers by concern, one auth dependency, one error map.

Handlers stay thin: they validate input, call the metadata, block and upload services in the
threadpool (blocking work) or await the notifier (long polls), and shape the JSON answer.
"""
