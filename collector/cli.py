"""The ``collector`` command: serve, schemas, send, keys, warehouse, report and demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from collector.settings import SettingsError, load_settings

log = logging.getLogger("collector.cli")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except SettingsError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the HTTP collector")
    serve.add_argument("--host", help="address to bind (default COLLECTOR_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default COLLECTOR_PORT or 8080)")
    serve.set_defaults(run=_serve)

    schemas = commands.add_parser("schemas", help="write the JSON Schema and BigQuery schema")
    schemas.add_argument("--output", type=Path, default=Path("schemas"), help="folder to write")
    schemas.add_argument(
        "--check", action="store_true", help="exit 1 if the files differ instead of writing"
    )
    schemas.set_defaults(run=_schemas)

    send = commands.add_parser("send", help="post an NDJSON file of client events in batches")
    send.add_argument("file", type=Path, help="NDJSON file, one client event per line")
    send.add_argument("--url", default="http://127.0.0.1:8080/collect", help="collect URL")
    send.add_argument("--key", required=True, help="API key (sent in X-API-Key)")
    send.add_argument("--batch-size", type=int, default=200, help="events per request")
    send.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    send.add_argument(
        "--retries", type=int, default=5, help="retries on 429, 503 or network errors"
    )
    send.add_argument("--quiet", action="store_true", help="no progress bar")
    send.set_defaults(run=_send)

    keys = commands.add_parser("keys", help="create and list API keys")
    key_commands = keys.add_subparsers(title="keys commands")
    create = key_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--id", required=True, help="key id, shown in logs instead of the key")
    create.add_argument("--kind", choices=["browser", "server"], default="browser")
    create.add_argument(
        "--origin",
        action="append",
        default=[],
        help="allowed origin (repeatable), e.g. https://www.example.com or https://*.example.com",
    )
    create.add_argument("--rate-limit", help="events allowed per window, e.g. 1200/minute")
    create.add_argument("--event", action="append", help="allowed event name (repeatable)")
    create.add_argument("--file", type=Path, help="keys file (default COLLECTOR_KEYS_FILE)")
    create.set_defaults(run=_keys_create)
    listing = key_commands.add_parser("list", help="list key ids, kinds and origins")
    listing.add_argument("--file", type=Path, help="keys file (default COLLECTOR_KEYS_FILE)")
    listing.set_defaults(run=_keys_list)

    try:
        from collector.warehouse.cli import add_commands
    except ImportError:
        pass
    else:
        add_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from collector.app import create_app
    from collector.devkey import ensure_dev_key
    from collector.logs import configure_logging
    from collector.server import protocol_for

    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(**overrides)
    configure_logging(settings.log_level)
    if settings.keys_file is None:
        key = ensure_dev_key(settings.data_dir)
        if key is not None:
            print(
                "Created a development API key (shown once; only its hash is stored in "
                f"{settings.data_dir}/dev_keys.json):\n\n    {key}\n",
                flush=True,
            )
    from collector.keys import KeysFileError

    try:
        app = create_app(settings)
    except KeysFileError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop=_best("uvloop", "auto"),
        http=protocol_for(settings),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=7,
        timeout_keep_alive=30,
        # The collector reads X-Forwarded-For itself (COLLECTOR_TRUSTED_PROXY_HOPS); uvicorn's
        # proxy-header handling would also trust it from loopback peers and rewrite the client.
        proxy_headers=False,
        server_header=False,
    )
    return 0


def _best(module: str, fallback: str) -> str:
    try:
        __import__(module)
    except ImportError:
        return fallback
    return module


def _schemas(args: argparse.Namespace) -> int:
    from collector.schemas import write_schemas

    changed = write_schemas(args.output, check=args.check)
    if args.check and changed:
        print("schemas differ from the models: " + ", ".join(changed), file=sys.stderr)
        return 1
    for name in changed:
        print(f"wrote {args.output / name}")
    return 0


def _send(args: argparse.Namespace) -> int:
    from collector.sender import send_file

    if not args.file.is_file():
        print(f"collector: {args.file} is not a file", file=sys.stderr)
        return 2
    try:
        result = send_file(
            args.file,
            url=args.url,
            key=args.key,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            retries=args.retries,
            progress=not args.quiet,
        )
    except ValueError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    print(
        f"accepted {result.accepted}, rejected {result.rejected}, "
        f"failed {result.failed} (requests {result.requests})"
    )
    for reason in result.reasons:
        print(f"  rejected: {reason}")
    if result.rejected and not result.accepted:
        print(
            "collector: every event was rejected; the file must hold client events "
            "(generate_sample_events.py --format client)",
            file=sys.stderr,
        )
    return 0 if result.failed == 0 and (result.accepted or not result.rejected) else 1


def _keys_file(args: argparse.Namespace) -> Path:
    if args.file is not None:
        return args.file
    settings = load_settings()
    if settings.keys_file is None:
        raise SettingsError("set COLLECTOR_KEYS_FILE or pass --file to choose the keys file")
    return settings.keys_file


def _keys_create(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from collector.keys import KeysFileError, add_key

    path = _keys_file(args)
    if args.kind == "browser" and not args.origin:
        print("collector: a browser key needs at least one --origin", file=sys.stderr)
        return 2
    try:
        key = add_key(path, args.id, args.kind, args.origin, args.rate_limit, args.event)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        print(f"collector: invalid {where}: {message}", file=sys.stderr)
        return 2
    except (KeysFileError, ValueError) as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    print(f"created {args.kind} key {args.id} in {path}; it is shown only now:\n\n    {key}\n")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from collector.keys import KeysFileError, read_entries

    try:
        entries = read_entries(_keys_file(args))
    except KeysFileError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    print(f"{'id':<24} {'kind':<8} {'rate limit':<16} origins")
    for entry in entries:
        origins = ", ".join(entry.origins) or "-"
        print(f"{entry.id:<24} {entry.kind:<8} {entry.rate_limit or 'default':<16} {origins}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
