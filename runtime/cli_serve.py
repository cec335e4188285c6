"""`edgelm serve`: its options checked before the model loads, then the OpenAI-compatible server."""

from __future__ import annotations

import sys

from .errors import EdgelmError


def run_serve(args) -> int:
    from pathlib import Path

    from . import load
    from .server.serve import CLI_LOG_CONFIG, import_uvicorn, serve

    import_uvicorn()  # before the model loads: a missing extra is the first thing to hear about
    for name, value, low, high in (("--port", args.port, 0, 65535), ("--parallel", args.parallel, 1, None),
                                   ("--max-queue", args.max_queue, 0, None)):
        if value < low or (high is not None and value > high):
            limits = f"{low}..{high}" if high is not None else f"{low} or more"
            raise EdgelmError(f"{name} {value} is invalid: use {limits}")
    if args.api_key is not None and not args.api_key.strip():
        raise EdgelmError("--api-key is empty: give a key (clients then send it as Authorization: Bearer KEY) "
                          "or leave the option out")
    _check_host(args.host, args.port)
    model = load(args.model, threads=args.threads)
    model.runner.open_prefill_graph()  # a damaged one is named here, before anything says "serving"
    model_id = args.model_id or Path(str(args.model).rstrip("/")).name
    print(f"edgelm: serving {model_id} on http://{args.host}:{args.port}/v1 ({args.parallel} in parallel)",
          file=sys.stderr, flush=True)
    serve(model, model_id, host=args.host, port=args.port, parallel=args.parallel, api_key=args.api_key,
          max_queue=args.max_queue, log_config=CLI_LOG_CONFIG)
    return 0


def _check_host(host: str, port: int) -> None:
    """Refuses a --host that names no address of this machine, or a port in use, before the model loads
    (uvicorn would fail only after)."""
    import errno
    import socket

    try:
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
                probe.bind(address)
                return
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise EdgelmError(f"--port {port} is in use on {host}: stop what listens there, or give another "
                              "port") from None
        raise EdgelmError(f"--host {host} cannot be listened on ({exc.strerror or exc}): give an address of this "
                          "machine, 127.0.0.1 (the default) or 0.0.0.0 for every interface") from None
