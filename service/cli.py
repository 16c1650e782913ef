"""The server's commands, ``iclserve serve``, ``iclserve prepare-model`` and ``iclserve upgrade-db``. Flags override
``ICL_*`` environment variables, which override defaults. Light at import: the command line of the client reads
these parsers too."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

SERVER_COMMANDS = ("serve", "prepare-model", "upgrade-db")


def add_server_commands(commands: Any) -> None:
    """The server's subcommands, on an ``add_subparsers()`` object."""
    serve = commands.add_parser("serve", help="start the HTTP service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--data-dir", type=Path)
    serve.add_argument("--database-url")
    serve.add_argument("--model", help="local Hugging Face model folder (default: SmolLM2-135M-Instruct)")
    serve.add_argument("--api-keys", help="comma-separated bearer keys; unset = no auth")
    serve.add_argument("--dtype")
    serve.add_argument("--max-model-len", type=int)
    serve.add_argument("--log-level")
    prepare = commands.add_parser("prepare-model", help="convert the default model (or --gguf) once, then exit")
    prepare.add_argument("--model-cache", type=Path)
    prepare.add_argument("--gguf", type=Path, help="convert this local GGUF file instead; serve the printed folder "
                         "with --model or ICL_MODEL")
    upgrade = commands.add_parser("upgrade-db", help="bring the database's schema to this version's, then exit "
                                  "(what serve does at start unless ICL_DB_UPGRADE=0)")
    upgrade.add_argument("--data-dir", type=Path)
    upgrade.add_argument("--database-url")


def run_server_command(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401  (what serve needs, checked before anything starts)

        from service.config import Settings
    except ImportError as exc:
        print(f"iclserve {args.command}: the server is not installed ({exc.name} is missing); install "
              "'icl-service[cpu]' (or [gpu]), or run `make install`", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "prepare-model":
        from service.model_files import ensure_default_model, ensure_gguf_model

        if args.gguf is not None:
            print(ensure_gguf_model(args.gguf.expanduser(), settings.model_cache))
        else:
            print(ensure_default_model(settings.model_cache))
        return 0
    if args.command == "upgrade-db":
        from service.store import Store

        Store(settings.resolved_database_url, upgrade=True).close()
        from service.schema import head

        print(f"the database is at schema revision {head()}")
        return 0

    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="iclserve", description="In-context-learning classification on vLLM.")
    add_server_commands(parser.add_subparsers(dest="command", required=True))
    return run_server_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
