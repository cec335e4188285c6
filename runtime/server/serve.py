"""Running the app on uvicorn: `edgelm serve MODEL` and `edgelm.server.serve.serve(...)` from Python."""

from __future__ import annotations

import logging

from ..errors import EdgelmError

logger = logging.getLogger(__name__)

# uvicorn's own loggers only, to stderr: the host process's root logger is never touched
CLI_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.access": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


def import_uvicorn():
    """uvicorn (and so fastapi, which the app imports), or an error that says how to install them."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise EdgelmError(f"`edgelm serve` needs the serve extra, which this install lacks (missing: {exc.name}): "
                          "pip install 'edgelm[serve]' (or fastapi and uvicorn)") from exc
    return uvicorn


def serve(model, model_id: str, host: str = "127.0.0.1", port: int = 8000, parallel: int = 4,
          api_key: str | None = None, max_queue: int | None = 64, log_config: dict | None = None) -> None:
    """Serves `model` (a loaded Model) until interrupted; see `create_app` for the arguments.

    `log_config` is uvicorn's logging dict; None (the default when embedding) configures no logging.
    """
    uvicorn = import_uvicorn()
    from .app import create_app

    app = create_app(model, model_id, parallel=parallel, api_key=api_key, max_queue=max_queue)
    if host not in ("127.0.0.1", "localhost", "::1") and api_key is None:
        logger.warning("edgelm serve: listening on %s without --api-key: anyone who can reach it can use it", host)
    uvicorn.run(app, host=host, port=port, log_config=log_config, access_log=log_config is not None)
