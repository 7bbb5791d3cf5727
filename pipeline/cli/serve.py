"""``python -m pipeline serve``: the service on a running Ray cluster, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline.cli.parser import Parser
from pipeline.config import DEVICES, RunConfig
from pipeline.errors import EXIT_OK, PipelineError
from pipeline.service.settings import TOKEN_ENV, ServiceSettings, read_token_file

EPILOG = f"""\
The service needs a running Ray cluster (its jobs are Ray jobs, so they outlive the service):

  export RAY_AUTH_MODE=token
  ray start --head --metrics-export-port 8080
  export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')
  python -m pipeline serve --input-root /data/videos --output-root /data/out --model /models/yolo11n.pt

Then: curl -H "Authorization: Bearer ${TOKEN_ENV}" http://127.0.0.1:8000/jobs ; the API's
documentation is at http://127.0.0.1:8000/docs. Every request but /health, /metrics and /docs
needs the token. Jobs may read only under --input-root and write only under --output-root.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m pipeline serve",
        description="Serve the detection API (FastAPI on Ray Serve).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_access_options(parser)
    _add_detect_options(parser)
    _add_server_options(parser)
    return parser


def _add_access_options(parser: argparse.ArgumentParser) -> None:
    """What jobs may read and write, and who may ask."""
    parser.add_argument(
        "--input-root",
        action="append",
        required=True,
        metavar="DIR",
        help="folder (or URI prefix) jobs may read videos from; repeat for several",
    )
    parser.add_argument(
        "--output-root",
        action="append",
        required=True,
        metavar="DIR",
        help="folder (or URI prefix) jobs may write outputs to; repeat for several",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"file holding the bearer token (default: ${TOKEN_ENV})",
    )
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="accept requests without a token (trusted networks only)",
    )


def _add_detect_options(parser: argparse.ArgumentParser) -> None:
    """The model, and how POST /detect runs it."""
    d = RunConfig()
    parser.add_argument(
        "--model", default=d.model, help="model of POST /detect and of jobs (default %(default)s)"
    )
    parser.add_argument(
        "--imgsz", type=int, default=d.imgsz, help="POST /detect input size (default %(default)s)"
    )
    parser.add_argument(
        "--conf",
        type=float,
        default=d.conf,
        help="POST /detect confidence threshold (default %(default)s)",
    )
    parser.add_argument(
        "--iou",
        type=float,
        default=d.iou,
        help="POST /detect NMS IoU threshold (default %(default)s)",
    )
    parser.add_argument(
        "--device",
        choices=[x for x in DEVICES if x != "auto"],
        default="cpu",
        help="POST /detect device (default %(default)s)",
    )
    parser.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="POST /detect: most images per dynamic batch "
        "(default: 16 on cuda; 1 on cpu, where batching measured no gain)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=10.0,
        help="POST /detect: longest wait for a batch to fill (default %(default)s)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=20.0,
        help="largest POST /detect body (default %(default)s)",
    )
    parser.add_argument(
        "--detector-replicas",
        type=int,
        default=1,
        help="detector deployments (default %(default)s)",
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    """Where the service listens, and the Ray cluster it runs on."""
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP host (default %(default)s; 0.0.0.0 for all interfaces)",
    )
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default %(default)s)")
    parser.add_argument(
        "--address", default="auto", help="Ray cluster to join (default %(default)s)"
    )
    parser.add_argument(
        "--dashboard",
        default="http://127.0.0.1:8265",
        help="Ray's job API address (default %(default)s)",
    )


def settings_from_args(args: argparse.Namespace, env: dict | None = None) -> ServiceSettings:
    env = os.environ if env is None else env
    token = read_token_file(args.token_file) if args.token_file else env.get(TOKEN_ENV) or None
    return ServiceSettings(
        input_roots=tuple(os.path.abspath(r) if "://" not in r else r for r in args.input_root),
        output_roots=tuple(os.path.abspath(r) if "://" not in r else r for r in args.output_root),
        token=token,
        auth=not args.no_auth,
        model=args.model,
        imgsz=args.imgsz,
        conf=args.conf,
        iou=args.iou,
        device=args.device,
        max_batch=args.max_batch or (16 if args.device == "cuda" else 1),
        batch_wait_s=args.batch_wait_ms / 1000,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        ray_dashboard=args.dashboard,
        job_env=tuple((k, env[k]) for k in ("YOLO_OFFLINE",) if k in env),
    )


def serve_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        settings = settings_from_args(args)
        from pipeline.service.app import serve_until_stopped  # imports Ray: once the settings hold

        serve_until_stopped(
            settings,
            address=args.address,
            host=args.host,
            port=args.port,
            detector_replicas=args.detector_replicas,
        )
    except PipelineError as exc:  # bad settings, no Ray cluster to join: exit status 2
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return EXIT_OK
