"""The `qwen3repro` command line: parses arguments and calls the package; errors print as one line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import UserError

DEFAULT_CONFIG = "config/config.yaml"


def _pick_model(config: dict, name: str | None, config_path: str) -> str:
    models = config["models"]
    if name is None:
        if len(models) != 1:
            raise UserError(f"{config_path} has {len(models)} models; choose one with --model: {', '.join(models)}")
        return next(iter(models))
    if name not in models:
        raise UserError(f"model {name!r} is not in {config_path}; it has: {', '.join(models)}")
    return name


def cmd_get_model(args: argparse.Namespace) -> None:
    from .config import load_config
    from .sources import materialize

    config = load_config(args.config)
    name = _pick_model(config, args.model, args.config)
    out = Path(args.out) if args.out else Path("results/models") / name
    if not args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
    materialize(name, config["models"][name], out, force=args.force)
    print(out)


def cmd_convert(args: argparse.Namespace) -> None:
    from .gguf_convert import convert

    manifest = convert(args.model, args.type, args.out, force=args.force, name=args.name, threads=args.threads)
    print(f"{args.out}: {manifest['file_type']}, {manifest['size'] / 2**20:.1f} MiB, "
          f"{manifest['bits_per_weight']:.2f} bits per weight, {manifest['seconds']:.1f} s")


def cmd_check_config(args: argparse.Namespace) -> None:
    from .config import load_config

    config = load_config(args.config)
    print(f"{args.config}: valid; models: {', '.join(config['models'])}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen3repro", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("get-model", help="build or download a model's Hugging Face directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default {DEFAULT_CONFIG})")
    p.add_argument("--model", help="model name in the config (default: its only model)")
    p.add_argument("--out", help="output directory (default results/models/<model>); its parent must exist")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_get_model)

    from .quant_plan import FILE_TYPES

    p = sub.add_parser("convert", help="convert a Hugging Face Qwen3 directory to GGUF")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--type", required=True, help=f"file type: {', '.join(FILE_TYPES)}")
    p.add_argument("--out", required=True, help="output .gguf (a manifest .json is written beside it)")
    p.add_argument("--name", help="general.name in the metadata (default: the directory's name)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--threads", type=int, help="quantization threads (default: all cores)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("check-config", help="validate a pipeline config against the schema")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        args.func(args)
    except UserError as e:
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qwen3repro: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
