"""The `qwen3repro` commands: each takes the parsed arguments, calls the package and prints its result."""

from __future__ import annotations

import argparse
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
        name,
        config["models"][name],
        results / "models" / name,
        results / "gguf" / name,
        out,
        force=args.force,
        perplexity_dir=results / "perplexity" / name,
    )
    print(f"{out}: {len(reference['exact'])} files of {name}")


def cmd_usage(args: argparse.Namespace) -> None:
    from qwen3repro.pipeline.usage import MAX_RATIO, by_rule, problems, usage_table

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


def parse_on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, not {value!r}")
    return value == "on"


def read_text_file(path: str) -> str:
    """A UTF-8 text file the user named; a missing or undecodable one is a one-line error."""
    try:
        return Path(path).read_text("utf-8")
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{path}: no such text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def parse_count(value: str) -> int:
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
    from qwen3repro.pipeline.threads import limit_threads

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

    from qwen3repro.engine.tokenizer import Tokenizer
    from qwen3repro.gguf_file import GGUFFile

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
    from qwen3repro.fsutil import check_writable_target, staged_file, write_text_atomic

    for target in (args.json, args.plot):  # before minutes of measuring, not after
        if target:
            check_writable_target(Path(target), args.force)
    engines = engine_paths(args.engines, args.gguf, args.hf)
    context = context_length(args.gguf) if args.gguf else None
    rows = []
    for threads in dict.fromkeys(args.threads):  # one thread count after another, as llama-bench -t 1,2
        rows += bench(
            engines,
            args.n_prompt,
            args.n_gen,
            args.repetitions,
            threads,
            context,
            progress=lambda message, t=threads: print(f"{t} threads: {message}", file=sys.stderr),
            n_depth=args.n_depth,
            pg=args.pg,
        )
    records = as_records(rows)
    table = summary_table(records, None)  # each row's roofline from the probes beside it
    print(format_summary(table))
    for line in ratios(rows):
        print(line)
    for threads in dict.fromkeys(args.threads):
        probes = next(r.bandwidth_probes for r in rows if r.n_threads == threads)
        print(
            f"{threads} threads: memory bandwidth (float32 GEMV probe) {probes[0] / 1e9:.1f} GB/s before the runs, "
            f"{probes[1] / 1e9:.1f} after"
        )
    print(
        "roofline: decode t/s as a share of the better probe / bytes the engine reads per token (numpy: every "
        "type in float32; at a depth, the KV cache too); '!' marks a share above 100%, a measurement to repeat"
    )
    if args.plot:
        from qwen3repro.report.speed_figures import decode_by_depth

        png = decode_by_depth(table)
        if png is None:
            print("no plot: no decode test ran at two depths or more", file=sys.stderr)
        else:
            with staged_file(Path(args.plot), args.force) as tmp:
                tmp.write_bytes(png)
    if args.json:
        write_text_atomic(Path(args.json), json.dumps(records, indent=1) + "\n", force=args.force)


def cmd_perplexity(args: argparse.Namespace) -> None:
    from qwen3repro.accuracy.divergence import report
    from qwen3repro.accuracy.perplexity import perplexity_and_kld
    from qwen3repro.fsutil import check_writable_target, write_json_atomic

    if args.json:
        check_writable_target(Path(args.json), args.force)
    text = read_text_file(args.file)
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


def cmd_tasks(args: argparse.Namespace) -> None:
    from qwen3repro.accuracy.task_formats import FORMATS as TASK_FORMATS
    from qwen3repro.accuracy.tasks import score_file
    from qwen3repro.fsutil import check_writable_target, write_json_atomic

    if args.json:
        check_writable_target(Path(args.json), args.force)
    runtime = "llama.cpp" if args.llama_cpp else "numpy"
    files = {fmt: getattr(args, fmt.replace("-", "_")) for fmt in TASK_FORMATS}
    fmt, task_file = next((fmt, path) for fmt, path in files.items() if path)
    r = score_file(args.model, task_file, fmt, args.base, runtime, args.ctx_size, args.threads)
    skipped = f" ({len(r['skipped_lines'])} lines skipped, as the binary skips them)" if r["skipped_lines"] else ""
    print(f"{runtime}: {r['correct']}/{r['tasks']} right{skipped}")
    print(r["line"])  # the line llama-perplexity prints last for this format
    if args.base:
        flo, fhi = r["flip_interval"]
        print(
            f"flips against {Path(args.base).name}: {r['flips']} ({r['flip_rate']:.2%}, 95% [{flo:.2%}, {fhi:.2%}]; "
            f"right to wrong {r['right_to_wrong']}, wrong to right {r['wrong_to_right']}, "
            f"wrong to wrong {r['wrong_to_wrong']}); mean KLD over the answers' tokens {r['answer_kld_mean']:.6g}"
        )
    if args.json:
        write_json_atomic(Path(args.json), r, force=args.force)


def cmd_make_task(args: argparse.Namespace) -> None:
    from qwen3repro.accuracy.task_data import build_blanks, build_tasks
    from qwen3repro.accuracy.task_formats import write_tasks
    from qwen3repro.fsutil import staged_file

    text = read_text_file(args.text)
    try:
        build = build_blanks if args.format == "winogrande" else build_tasks
        tasks = build(text, args.tasks, args.seed)
    except ValueError as e:
        raise UserError(f"{args.text}: {e}") from None
    with staged_file(Path(args.out), args.force) as tmp:
        write_tasks(tasks, tmp, args.format)
    print(f"{args.out}: {len(tasks)} tasks")


def cmd_task_set(args: argparse.Namespace) -> None:
    from qwen3repro.accuracy.task_sets import EXTENSION, active_sets, set_format, write_set
    from qwen3repro.config import load_config
    from qwen3repro.fsutil import check_writable_target

    config = load_config(args.config)
    sets = active_sets(config["tasks"])
    if args.set not in sets:
        raise UserError(f"{args.config}: no task set {args.set!r} in tasks.sets (it has: {', '.join(sets) or 'none'})")
    spec = sets[args.set]
    out = Path(args.out or f"{args.set}.{EXTENSION[set_format(spec)]}")
    check_writable_target(out, args.force)
    manifest = write_set(args.set, spec, out, config["perplexity"]["corpus"]["held_out_every"])
    print(f"{out}: {manifest['tasks']} tasks, llama-perplexity --{manifest['format']} reads it")
