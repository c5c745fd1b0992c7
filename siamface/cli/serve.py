"""`siamface serve`: the HTTP service and web page (siamface.serve; needs the [serve] extra)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from .flags import add_keep_crops_flags, add_runtime_flag


def _settings(args: argparse.Namespace) -> tuple[Any, str, tuple[str, ...]]:
    """The service's Settings from the command line (and the environment), its gallery and Host names."""
    from ..errors import SiamfaceError
    from ..gallery_store import location_of
    from ..serve import Limits, Settings
    from ..serve.security import default_hosts

    gallery = args.gallery or os.environ.get("SIAMFACE_GALLERY")
    if not gallery:
        raise SiamfaceError("no gallery: pass --gallery FILE (or a postgresql:// URL) or set SIAMFACE_GALLERY")
    if args.processes < 1:
        raise SiamfaceError(f"--processes must be 1 or more, not {args.processes}")
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_mpx * 1e6),
                    timeout_s=args.timeout, max_side=args.max_side, workers=args.workers, queue=args.queue,
                    light_workers=args.light_workers,
                    max_full_decode_pixels=int(args.max_mpx_full_decode * 1e6))
    hosts = tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip()) if args.allowed_hosts else \
        default_hosts(args.host)
    settings = Settings.from_env(gallery=location_of(gallery), model=args.model, far=args.far, limits=limits,
                                 allowed_hosts=hosts, keep_crops=args.keep_crops, crops_dir=args.crops_dir)
    return settings, gallery, hosts


def _resources(args: argparse.Namespace, settings: Any) -> Any:
    """The model and gallery of one serving process (a bad model or gallery fails here, in one line)."""
    from ..serve import open_resources

    if args.threads:
        from .. import threads

        threads.set_threads(args.threads)
    resources = open_resources(settings)
    if args.runtime != "torch":  # the gallery embeds through this verifier's net too
        from ..onnx_runtime import onnx_tower

        resources.verifier.net = onnx_tower(resources.verifier.loaded, args.runtime)
    return resources


def _config(args: argparse.Namespace, settings: Any, resources: Any) -> Any:
    from ..serve import create_app
    from ..serve.server import server_config

    return server_config(create_app(settings, resources), args.host, args.port, args.header_timeout,
                         args.max_connections, args.log_level)


def cmd_serve(args: argparse.Namespace) -> None:
    from ..serve import require_extra

    require_extra()
    import uvicorn

    from ..gallery_store import gallery_where

    settings, gallery, hosts = _settings(args)
    resources = _resources(args, settings)  # a bad model or gallery fails here, in one line, before listening
    mode = "read-write" if settings.api_key else "read-only (set SIAMFACE_API_KEY to allow enroll and delete)"
    mode += ", a door key (SIAMFACE_DOOR_KEY) for /door" if settings.door_key else ""
    procs = f", {args.processes} processes" if args.processes > 1 else ""
    print(f"siamface serve: http://{args.host}:{args.port}/ model {resources.verifier.name} ({args.runtime}), "
          f"gallery {gallery_where(gallery)}, {mode}; hosts {', '.join(hosts)}{procs}", file=sys.stderr)
    if args.processes > 1:
        resources.close()  # checked; each process opens its own
        del resources
        serve_processes(args)
        return
    uvicorn.Server(_config(args, settings, resources)).run()


def _serve_child(args: argparse.Namespace, sock: socket.socket) -> None:
    """One serving process of --processes N: the app exactly as with one process, on the parent's socket."""
    import uvicorn

    settings, _, _ = _settings(args)
    uvicorn.Server(_config(args, settings, _resources(args, settings))).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound once by the parent (uvicorn's own backlog)."""
    from ..errors import SiamfaceError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, as asyncio's own sockets: its accepted connections get TCP_NODELAY only then (with proto 0,
    # Nagle's algorithm and delayed ACKs held each keep-alive answer back about 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SiamfaceError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_processes(args: argparse.Namespace) -> None:
    """Bind the socket, start `args.processes` spawned serving processes on it, forward SIGINT/SIGTERM to them
    (as SIGTERM: a graceful stop) and wait; exit non-zero, naming it, if one dies while not asked to stop."""
    import multiprocessing
    import multiprocessing.connection
    import signal

    sock = _listen(args.host, args.port)
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_serve_child, args=(args, sock), name=f"siamface-serve-{i + 1}")
                for i in range(args.processes)]
    stopping = False

    def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
        nonlocal stopping
        stopping = True
        for c in children:
            if c.pid is not None and c.exitcode is None:
                os.kill(c.pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for c in children:
        c.start()
    sock.close()  # the children hold it
    failed: list[str] = []
    running = list(children)
    while running:
        multiprocessing.connection.wait([c.sentinel for c in running], timeout=1.0)
        for c in [c for c in running if c.exitcode is not None]:
            running.remove(c)
            # uvicorn re-raises the signal it stopped for once it has shut down: -SIGTERM is a clean stop
            if not stopping or c.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                failed.append(f"{c.name} (pid {c.pid}) exited with {c.exitcode}")
                if not stopping:
                    stop(signal.SIGTERM, None)  # one gone: stop the others
    if failed:
        print(f"siamface serve: {failed[0]}" + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""),
              file=sys.stderr)
        raise SystemExit(1)


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="HTTP service and web page (verify, enroll, identify); needs siamface[serve]")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--gallery", default=None,
                   help="the gallery: a SQLite file (created if missing) or a postgresql://USER@HOST/DB URL, one "
                        "database that several replicas share (default: $SIAMFACE_GALLERY)")
    add_keep_crops_flags(s)
    s.add_argument("--model", default=None,
                   help="a shipped model's name or a run folder (default: the model that built the gallery, else "
                        "the shipped face model)")
    s.add_argument("--far", type=float, default=None, help="operating point: the threshold calibrated for this "
                                                          "false accept rate (1e-2, 1e-3, 1e-4)")
    s.add_argument("--allowed-hosts", default=None,
                   help="comma-separated Host header names served, or * for any (default: the loopback names when "
                        "--host is loopback, else any): refuses DNS-rebinding pages")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted image file (MB)")
    s.add_argument("--max-mpx", type=float, default=40.0, help="largest accepted image (megapixels, from its header)")
    s.add_argument("--max-mpx-full-decode", type=float, default=16.0,
                   help="largest image of a format decoded whole (all but JPEG), in megapixels")
    s.add_argument("--max-side", type=int, default=2048,
                   help="photos with a longer side are analysed at reduced size (JPEG: decoded smaller, cheaply)")
    s.add_argument("--timeout", type=float, default=30.0,
                   help="seconds a request may take before a 504 (its work stops at its next stage)")
    s.add_argument("--workers", type=int, default=2, help="requests computing at once")
    s.add_argument("--max-connections", type=int, default=64, help="open connections; more are answered 503")
    s.add_argument("--header-timeout", type=float, default=10.0,
                   help="seconds a client may take to send a request's headers before the connection is closed")
    s.add_argument("--processes", type=int, default=1,
                   help="serving processes sharing the port, each with its own model, gallery index, --workers, "
                        "--queue and /metrics (memory N x); the gallery stays consistent through its store")
    s.add_argument("--queue", type=int, default=8, help="requests waiting for a worker; more are answered 503")
    s.add_argument("--light-workers", type=int, default=1,
                   help="extra workers for light requests only (2 Mpx or less in all): an ordinary verify is not "
                        "held up behind large photos")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per request (default: SIAMFACE_THREADS or 1; requests run in parallel)")
    add_runtime_flag(s)
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)
