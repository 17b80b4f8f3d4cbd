"""The `qwen3repro` command line: parses arguments and calls the package; errors print as one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from qwen3repro.errors import UserError

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
    from qwen3repro.config import load_config
    from qwen3repro.model.sources import materialize

    config = load_config(args.config)
    name = _pick_model(config, args.model, args.config)
    out = Path(args.out) if args.out else Path("results/models") / name
    if not args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
    materialize(name, config["models"][name], out, force=args.force)
    print(out)


def cmd_convert(args: argparse.Namespace) -> None:
    from qwen3repro.convert.converter import convert

    manifest = convert(
        args.model, args.type, args.out, force=args.force, name=args.name, threads=args.threads, imatrix=args.imatrix
    )
    with_imatrix = f", importance matrix {args.imatrix}" if args.imatrix else ""
    print(
        f"{args.out}: {manifest['file_type']}{with_imatrix}, {manifest['size'] / 2**20:.1f} MiB, "
        f"{manifest['bits_per_weight']:.2f} bits per weight, {manifest['seconds']:.1f} s"
    )


def cmd_imatrix(args: argparse.Namespace) -> None:
    from qwen3repro.convert.calibrate import write_imatrix

    summary = write_imatrix(args.model, args.text, args.out, n_ctx=args.n_ctx, chunks=args.chunks, force=args.force)
    print(
        f"{args.out}: {summary['entries']} matrices over {summary['chunks']} chunks of {summary['n_ctx']} tokens, "
        f"{summary['seconds']:.1f} s"
    )


def cmd_reference(args: argparse.Namespace) -> None:
    from qwen3repro.config import load_config
    from qwen3repro.verify.verdict import write_reference

    config = load_config(args.config)
    name = _pick_model(config, args.model, args.config)
    results = Path(args.results)
    out = Path(args.out) if args.out else Path("config/reference") / f"{name}.yaml"
    reference = write_reference(
        name, config["models"][name], results / "models" / name, results / "gguf" / name, out, force=args.force
    )
    print(f"{out}: {len(reference['exact'])} files of {name}")


def cmd_usage(args: argparse.Namespace) -> None:
    from qwen3repro.usage import MAX_RATIO, by_rule, problems, usage_table

    table = usage_table(args.results)
    summary = by_rule(table)
    print(summary.to_markdown(index=False) if args.markdown else summary.to_string(index=False))
    if args.jobs:
        print()
        print(table.to_markdown(index=False) if args.markdown else table.to_string(index=False))
    found = problems(table)
    for line in found:
        print(f"qwen3repro: {line}", file=sys.stderr)
    over = f"over what they declared or asking more than {MAX_RATIO:g}x the memory they used"
    print(f"{len(table)} jobs; {len(found)} {over}")
    if found:
        sys.exit(1)


def cmd_check_config(args: argparse.Namespace) -> None:
    from qwen3repro.config import load_config

    config = load_config(args.config)
    print(f"{args.config}: valid; models: {', '.join(config['models'])}")


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")
    return value == "on"


def _count(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a number of candidates from 1 to 1000, not {value!r}")
    return int(value)


def _sampling(args: argparse.Namespace, thinking: bool):
    from qwen3repro.engine.sampler import preset

    name = args.preset or ("thinking" if thinking else "non-thinking")
    return preset(
        name,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        presence_penalty=args.presence_penalty,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )


def _generator(args: argparse.Namespace):
    from qwen3repro.engine.generate import Generator
    from qwen3repro.threads import limit_threads

    limit_threads(args.threads)
    return Generator.from_gguf(args.model, n_ctx=args.n_ctx)


def cmd_chat(args: argparse.Namespace) -> None:
    from qwen3repro.engine import chat

    params = _sampling(args, args.thinking)  # checked before the model loads
    generator = _generator(args)
    print(
        f"{args.model}: {generator.model.config.num_hidden_layers} layers, context {generator.model.n_ctx}; "
        f"thinking {'on' if args.thinking else 'off'}, multi-turn {'on' if args.multi_turn else 'off'}, "
        f"temperature {params.temperature}, top-p {params.top_p}, top-k {params.top_k}; /exit or Ctrl-D ends",
        file=sys.stderr,
    )
    chat.run(
        generator,
        params,
        system=args.system,
        thinking=args.thinking,
        multi_turn=args.multi_turn,
        max_new_tokens=args.max_new_tokens,
        show_probs=args.show_probs,
        lookup=args.lookup,
    )


def cmd_generate(args: argparse.Namespace) -> None:
    import json

    from qwen3repro.engine.candidates import Candidates, format_step

    params = _sampling(args, args.thinking if args.chat else False)
    generator = _generator(args)
    if args.chat:
        messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
            {"role": "user", "content": args.prompt}
        ]
        prompt = generator.chat_prompt(messages, thinking=args.thinking)
    else:
        prompt = generator.tokenizer.encode(args.prompt)

    def show(_token: int, piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    candidates = Candidates(args.n_probs, generator.tokenizer.decode) if args.n_probs else None
    result = generator.generate(
        prompt,
        params,
        max_new_tokens=args.max_new_tokens,
        on_token=None if args.json else show,
        observe=candidates,
        banned=generator.thinking_ban(args.thinking or not args.chat),
        lookup=args.lookup,
    )
    probs = {"probs": candidates.steps} if candidates else {}
    if args.json:
        print(json.dumps({"prompt_ids": prompt, **result.as_dict(), **probs}, ensure_ascii=False))
    else:
        print()
        for step in probs.get("probs", []):
            print(format_step(step))
        print(result.summary(), file=sys.stderr)


def cmd_tokenize(args: argparse.Namespace) -> None:
    import json

    from qwen3repro.convert.reader import GGUFFile
    from qwen3repro.engine.tokenizer import Tokenizer

    with GGUFFile(args.model) as f:
        tokenizer = Tokenizer.from_gguf(f)
        if args.chat:
            from qwen3repro.engine import chat_template

            try:
                messages = json.loads(Path(args.chat).read_text("utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"{args.chat}: not a readable JSON list of messages ({e})") from None
            template = f.fields.get("tokenizer.chat_template")
            if not template:
                raise UserError(f"{args.model}: no tokenizer.chat_template in the metadata")
            text = chat_template.render(
                template,
                messages,
                add_generation_prompt=True,
                enable_thinking=args.thinking,
                special_tokens=chat_template.special_tokens(f.fields, tokenizer.tokens),
                messages_from=args.chat,
            )
        elif args.file:
            try:
                text = Path(args.file).read_text("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"{args.file}: cannot read as UTF-8 text ({e})") from None
        else:
            text = args.text
        ids = tokenizer.encode(text)
        pieces = [tokenizer.token_bytes(i).decode("utf-8", errors="replace") for i in ids]
    if args.json:
        print(json.dumps({"ids": ids, "pieces": pieces, "n_tokens": len(ids)}, ensure_ascii=False))
    else:
        for i, piece in zip(ids, pieces):
            print(f"{i:>8} -> {piece!r}")
        print(f"{len(ids)} tokens", file=sys.stderr)


def cmd_bench(args: argparse.Namespace) -> None:
    import json

    from qwen3repro.bench.measure import as_records, bench, context_length, engine_paths
    from qwen3repro.bench.tables import format_summary, ratios, summary_table
    from qwen3repro.bench.worker import measure_bandwidth
    from qwen3repro.fsutil import check_writable_target, write_text_atomic

    if args.json:  # before minutes of measuring, not after
        check_writable_target(Path(args.json), args.force)
    engines = engine_paths(args.engines, args.gguf, args.hf)
    context = context_length(args.gguf) if args.gguf else None
    rows = bench(
        engines,
        args.n_prompt,
        args.n_gen,
        args.repetitions,
        args.threads,
        context,
        progress=lambda message: print(message, file=sys.stderr),
    )
    bandwidth = measure_bandwidth(args.threads) if any(n for n in args.n_gen) else None
    records = as_records(rows)
    print(format_summary(summary_table(records, bandwidth)))
    for line in ratios(rows):
        print(line)
    if bandwidth is not None:
        print(
            f"memory bandwidth (float32 GEMV probe): {bandwidth / 1e9:.1f} GB/s; roofline: decode t/s as a share "
            "of bandwidth / weight bytes read per token"
        )
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(records, indent=1) + "\n", force=args.force)


def cmd_perplexity(args: argparse.Namespace) -> None:
    from qwen3repro.accuracy.divergence import report
    from qwen3repro.accuracy.perplexity import perplexity_and_kld
    from qwen3repro.fsutil import check_writable_target, write_json_atomic

    if args.json:
        check_writable_target(Path(args.json), args.force)
    try:
        text = Path(args.file).read_text("utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{args.file}: no such text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{args.file}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    runtimes = ("numpy", "llama.cpp") if args.llama_cpp else ("numpy",)
    result = perplexity_and_kld(
        args.model,
        args.base or args.model,
        text,
        args.ctx_size,
        args.chunks,
        runtimes,
        args.threads or 1,
        args.low_memory,
    )
    for name, r in (("NumPy engine", result), ("llama.cpp", result.get("llama_cpp"))):
        if r is None:
            continue
        p = r["perplexity"]
        chunks = f"{p['n_chunks']} chunks of {p['n_ctx']}"
        print(f"{name}: {result['n_tokens']} tokens, {chunks}, {p['n_scored_tokens']} scored")
        print(f"Final estimate: PPL = {p['ppl']:.4f} +/- {p['ppl_error']:.5f}")
        if args.base:
            print(report(r["kld"]))
    if args.json:
        write_json_atomic(Path(args.json), result, force=args.force)


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="GGUF file")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--thinking", type=_on_off, default=True, metavar="on|off", help="Qwen3 thinking mode (default on)")
    p.add_argument(
        "--preset",
        choices=["thinking", "non-thinking", "greedy"],
        help="sampling preset (default: Qwen3's for the thinking mode); the flags below override it",
    )
    p.add_argument("--temperature", type=float, help="0 is greedy")
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int, help="0 turns it off")
    p.add_argument("--min-p", type=float)
    p.add_argument("--presence-penalty", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int, help="seed of the sampler (default 0)")
    p.add_argument("--max-new-tokens", type=int, default=2048)
    p.add_argument("--n-ctx", type=int, default=4096, help="context (KV cache) length (default 4096)")
    p.add_argument("--threads", type=int, help="BLAS threads (default: all cores)")
    p.add_argument(
        "--lookup",
        type=int,
        default=0,
        metavar="K",
        help="prompt-lookup decoding: draft up to K tokens from an earlier match of the context and check "
        "them in one pass (same output, fewer passes where the answer repeats the prompt; default 0: off)",
    )


def _add_model_commands(sub) -> None:
    """get-model, convert, check-config: the pipeline's first stages by hand."""
    from qwen3repro.convert.tensor_plan import FILE_TYPES

    p = sub.add_parser("get-model", help="build or download a model's Hugging Face directory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default {DEFAULT_CONFIG})")
    p.add_argument("--model", help="model name in the config (default: its only model)")
    p.add_argument("--out", help="output directory (default results/models/<model>); its parent must exist")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_get_model)

    p = sub.add_parser("convert", help="convert a Hugging Face Qwen3 directory to GGUF")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--type", required=True, help=f"file type: {', '.join(FILE_TYPES)}")
    p.add_argument("--out", required=True, help="output .gguf (a manifest .json is written beside it)")
    p.add_argument("--name", help="general.name in the metadata (default: the directory's name)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--threads", type=int, help="quantization threads (default: all cores)")
    p.add_argument("--imatrix", help="importance matrix (llama-imatrix's GGUF or legacy .dat) to quantize with")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("imatrix", help="collect an importance matrix over calibration text, as llama-imatrix")
    p.add_argument("--model", required=True, help="GGUF model (F32 for the reference matrix)")
    p.add_argument("--text", required=True, help="calibration text (UTF-8; never the text perplexity is measured on)")
    p.add_argument("--out", required=True, help="output file (llama-imatrix's GGUF form)")
    p.add_argument("--n-ctx", type=int, default=512, help="tokens per chunk (default 512, as llama-imatrix)")
    p.add_argument("--chunks", type=int, help="chunks to use (default: all)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_imatrix)

    p = sub.add_parser("reference", help="make a model's reference (config/reference/<model>.yaml) from a run")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default {DEFAULT_CONFIG})")
    p.add_argument("--model", help="model name in the config (default: its only model)")
    p.add_argument("--results", default="results", help="the run's results folder (default results)")
    p.add_argument("--out", help="reference file (default config/reference/<model>.yaml)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_reference)

    p = sub.add_parser(
        "usage", help="per rule, the threads, memory and time limit each job declared beside what it used"
    )
    p.add_argument("--results", default="results", help="the run's results folder (logs/ and benchmarks/)")
    p.add_argument("--jobs", action="store_true", help="every job too, not only the summary per rule")
    p.add_argument("--markdown", action="store_true", help="Markdown tables")
    p.set_defaults(func=cmd_usage)

    p = sub.add_parser("check-config", help="validate a pipeline config against the schema")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    p.set_defaults(func=cmd_check_config)


def _add_engine_commands(sub) -> None:
    """chat, generate, tokenize: the engine, as llama.cpp's llama-cli and llama-tokenize."""
    p = sub.add_parser("chat", help="chat with a GGUF model in the terminal")
    _add_generation_args(p)
    p.add_argument(
        "--multi-turn",
        type=_on_off,
        default=True,
        metavar="on|off",
        help="keep the conversation (default on); off answers each question on its own",
    )
    p.add_argument(
        "--show-probs",
        type=_count,
        default=0,
        metavar="N",
        help="after each answer, a line per token: its top-N candidates' probabilities and the nucleus cut",
    )
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("generate", help="one completion of a prompt, for scripts")
    _add_generation_args(p)
    p.add_argument("--prompt", required=True)
    p.add_argument("--chat", action="store_true", help="render the prompt as a user turn through the chat template")
    p.add_argument("--json", action="store_true", help="print tokens, text, stop reason and timings as JSON")
    p.add_argument(
        "--n-probs",
        type=_count,
        default=0,
        metavar="N",
        help="the top-N candidates of every token with probabilities and the nucleus cut (in --json: probs)",
    )
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("tokenize", help="the token ids and pieces the model sees")
    p.add_argument("--model", required=True, help="GGUF file")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text")
    source.add_argument("--file", help="a UTF-8 text file")
    source.add_argument("--chat", help="a JSON list of messages, rendered with the generation prompt")
    p.add_argument("--thinking", type=_on_off, default=True, metavar="on|off", help="with --chat (default on)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokenize)


def _add_measure_commands(sub) -> None:
    """bench, perplexity: llama-bench's and llama-perplexity's analogues."""
    p = sub.add_parser("bench", help="prefill and decode speed of engines side by side, as llama-bench measures")
    p.add_argument("--gguf", help="GGUF file for the numpy and llama.cpp engines")
    p.add_argument("--hf", help="Hugging Face directory of the same weights, for transformers")
    p.add_argument(
        "--engines",
        nargs="+",
        default=["numpy", "llama.cpp", "transformers-f32"],
        help="numpy, llama.cpp, transformers-f32, transformers-bf16",
    )
    p.add_argument("-p", "--n-prompt", type=int, nargs="*", default=[128], help="prompt lengths (default 128)")
    p.add_argument("-n", "--n-gen", type=int, nargs="*", default=[128], help="generated lengths (default 128)")
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--force", action="store_true", help="replace --json if it exists")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "perplexity", help="perplexity of a text as llama-perplexity computes it, and KL-divergence against a base file"
    )
    p.add_argument("--model", required=True, help="GGUF file")
    p.add_argument("-f", "--file", required=True, help="UTF-8 text file, e.g. wikitext-2-raw's wiki.test.raw")
    p.add_argument(
        "--base", help="GGUF file to compare against (usually the F32 one): adds the KL-divergence statistics"
    )
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="chunk length (default 512)")
    p.add_argument("--chunks", type=int, help="score at most this many chunks (default: all)")
    p.add_argument(
        "--llama-cpp",
        action="store_true",
        help="also llama.cpp's figures on the same chunks (its kernels' loss, as llama-perplexity prints it)",
    )
    p.add_argument("--threads", type=int, help="llama.cpp threads (default 1)")
    p.add_argument(
        "--low-memory",
        action="store_true",
        help="keep the weights in the file, each layer dequantized as a pass reaches it (the same figures)",
    )
    p.add_argument("--json", help="also write everything here")
    p.add_argument("--force", action="store_true", help="replace --json if it exists")
    p.set_defaults(func=cmd_perplexity)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwen3repro", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_model_commands(sub)
    _add_engine_commands(sub)
    _add_measure_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    # huggingface_hub's retries ("Trying to resume download...") are ours to report, in one line
    os.environ.setdefault("HF_HUB_VERBOSITY", "info" if args.verbose else "error")
    try:
        args.func(args)
    except UserError as e:
        print(f"qwen3repro: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (| head): not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("qwen3repro: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
