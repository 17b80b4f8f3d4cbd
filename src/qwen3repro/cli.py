"""The `qwen3repro` command line: the parser, and one line for any error (the commands are in commands.py)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from qwen3repro.commands import (
    DEFAULT_CONFIG,
    cmd_bench,
    cmd_chat,
    cmd_check_config,
    cmd_convert,
    cmd_generate,
    cmd_get_model,
    cmd_imatrix,
    cmd_make_task,
    cmd_perplexity,
    cmd_reference,
    cmd_task_set,
    cmd_tasks,
    cmd_tokenize,
    cmd_usage,
    parse_count,
    parse_on_off,
)
from qwen3repro.errors import UserError


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="GGUF file")
    p.add_argument("--system", help="system prompt")
    p.add_argument(
        "--thinking", type=parse_on_off, default=True, metavar="on|off", help="Qwen3 thinking mode (default on)"
    )
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
        type=parse_on_off,
        default=True,
        metavar="on|off",
        help="keep the conversation (default on); off answers each question on its own",
    )
    p.add_argument(
        "--show-probs",
        type=parse_count,
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
        type=parse_count,
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
    p.add_argument("--thinking", type=parse_on_off, default=True, metavar="on|off", help="with --chat (default on)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tokenize)


def _pair(text: str) -> tuple[int, int]:
    """llama-bench's -pg value: "512,128"."""
    try:
        n_prompt, n_gen = (int(n) for n in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROMPT,GEN such as 512,128, got {text!r}") from None
    return n_prompt, n_gen


def _add_measure_commands(sub) -> None:
    """bench, perplexity: llama-bench's and llama-perplexity's analogues."""
    p = sub.add_parser("bench", help="prefill and decode speed of engines side by side, as llama-bench measures")
    p.add_argument("--gguf", help="GGUF file for the numpy and llama.cpp engines")
    p.add_argument("--hf", help="Hugging Face directory of the same weights, for transformers")
    p.add_argument(
        "--engines",
        nargs="+",
        default=["numpy", "llama.cpp", "transformers-f32"],
        help="numpy, numpy-low-memory, llama.cpp, transformers-f32, transformers-bf16",
    )
    p.add_argument("-p", "--n-prompt", type=int, nargs="*", default=[128], help="prompt lengths (default 128)")
    p.add_argument("-n", "--n-gen", type=int, nargs="*", default=[128], help="generated lengths (default 128)")
    p.add_argument(
        "-pg", type=_pair, nargs="*", default=[], metavar="P,G", help="prompt then generation, timed together"
    )
    p.add_argument(
        "-d", "--n-depth", type=int, nargs="*", default=[0], help="context depths: tokens already there (default 0)"
    )
    p.add_argument("-r", "--repetitions", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, nargs="+", default=[2], help="thread counts (default 2)")
    p.add_argument("--plot", help="also draw decode speed against depth, per engine and type, into this PNG")
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

    p = sub.add_parser("tasks", help="multiple-choice accuracy as llama-perplexity scores it; flips against a base")
    p.add_argument("--model", required=True, help="GGUF file")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--hellaswag", metavar="FILE", help="task file in llama-perplexity's HellaSwag format")
    kind.add_argument("--winogrande", metavar="FILE", help="task file in llama-perplexity's Winogrande CSV format")
    kind.add_argument(
        "--multiple-choice", metavar="FILE", help="task file in llama-perplexity's binary multiple-choice format"
    )
    p.add_argument("--base", help="GGUF file to compare against (usually the F32 one): adds flips and answer KLD")
    p.add_argument("--llama-cpp", action="store_true", help="score with llama.cpp's logits instead of the engine's")
    p.add_argument("-c", "--ctx-size", type=int, default=512, help="the longest task's tokens (default 512)")
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (default 1)")
    p.add_argument("--json", help="also write everything here")
    p.add_argument("--force", action="store_true", help="replace --json if it exists")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("task-set", help="a config's task set as the pipeline builds it, in llama-perplexity's format")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"pipeline config (default {DEFAULT_CONFIG})")
    p.add_argument("--set", required=True, help="the set's name in tasks.sets")
    p.add_argument("--out", help="the file to write (default <set>.txt, .csv or .bin by its format)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_task_set)

    p = sub.add_parser("make-task", help="an offline task from a play text, in one of llama-perplexity's formats")
    p.add_argument(
        "--format",
        choices=["hellaswag", "winogrande", "multiple-choice"],
        default="hellaswag",
        help="hellaswag or multiple-choice: which line comes next; winogrande: which word fills the blank",
    )
    p.add_argument("--text", required=True, help="UTF-8 text, e.g. results/corpus/perplexity.txt (held-out works)")
    p.add_argument("--tasks", type=int, default=200, help="how many tasks (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the task file to write")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_make_task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen3repro", description="Qwen3 from its source to GGUF, run by the NumPy engine, checked and measured."
    )
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
