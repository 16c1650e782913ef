"""``iclserve``: the command line. Flags override ``ICL_*`` environment variables, which override defaults."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from service.config import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iclserve", description="In-context-learning classification on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True)
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
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "gguf") and v is not None}
    return Settings(**overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "prepare-model":
        from service.model_files import ensure_default_model, ensure_gguf_model

        if args.gguf is not None:
            print(ensure_gguf_model(args.gguf.expanduser(), settings.model_cache))
        else:
            print(ensure_default_model(settings.model_cache))
        return 0

    import uvicorn

    from service.app import create_app

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
