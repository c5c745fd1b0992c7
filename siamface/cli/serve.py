"""`siamface serve`: the HTTP service and web page (siamface.serve; needs the [serve] extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .flags import add_runtime_flag


def cmd_serve(args: argparse.Namespace) -> None:
    from ..serve import require_extra

    require_extra()
    import uvicorn

    from ..serve import Limits, Settings, create_app, open_resources

    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=int(args.max_mpx * 1e6),
                    timeout_s=args.timeout)
    settings = Settings.from_env(gallery=Path(args.gallery), model=args.model, far=args.far, limits=limits)
    if args.threads:
        from .. import threads

        threads.set_threads(args.threads)
    resources = open_resources(settings)  # a bad model or gallery fails here, in one line, before listening
    if args.runtime != "torch":  # the gallery embeds through this verifier's net too
        from ..onnx_runtime import onnx_tower

        resources.verifier.net = onnx_tower(resources.verifier.loaded, args.runtime)
    mode = "read-write" if settings.api_key else "read-only (set SIAMFACE_API_KEY to allow enroll and delete)"
    print(f"siamface serve: http://{args.host}:{args.port}/ model {resources.verifier.name} ({args.runtime}), "
          f"gallery {args.gallery}, {mode}", file=sys.stderr)
    uvicorn.run(create_app(settings, resources), host=args.host, port=args.port, log_level=args.log_level)


def add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="HTTP service and web page (verify, enroll, identify); needs siamface[serve]")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--gallery", required=True, help="the gallery database file (SQLite; created if missing)")
    s.add_argument("--model", default=None, help="run folder or shipped model name (default: the shipped face model)")
    s.add_argument("--far", type=float, default=None, help="operating point: the threshold calibrated for this "
                                                          "false accept rate (1e-2, 1e-3, 1e-4)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted image file (MB)")
    s.add_argument("--max-mpx", type=float, default=40.0, help="largest accepted image (megapixels, from its header)")
    s.add_argument("--timeout", type=float, default=30.0, help="seconds a request may take before a 504")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per request (default: SIAMFACE_THREADS or 1; requests run in parallel)")
    add_runtime_flag(s)
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=cmd_serve)
