"""What pretraining bought: held-out loss by two runtimes, and continuations before and after.

    python benchmarks/trained_model.py [--model results/models/qwen3-shakespeare]

Scores the held-out Shakespeare windows of the model's own training recipe with the NumPy engine
(on an F32 GGUF made here) and with transformers, prints both next to the trainer's figure and
ln(151936), then prints greedy and sampled continuations of a prompt from the trained model and
from an untrained model of the same architecture (seeded random weights).
"""

import argparse
import json
import math
import tempfile
from pathlib import Path

from qwen3repro import synthetic
from qwen3repro.gguf_convert import convert
from qwen3repro.generate import Generator
from qwen3repro.sampler import PRESETS, SamplingParams
from qwen3repro.scoring import engine_cross_entropy, transformers_cross_entropy
from qwen3repro.train import held_out_set

PROMPT = "ROMEO.\nBut soft, what light through yonder window breaks?\n\nJULIET.\n"


def continuations(gguf: Path, n: int) -> dict[str, str]:
    generator = Generator.from_gguf(gguf, n_ctx=512)
    prompt = generator.tokenizer.encode(PROMPT)
    sampled = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, seed=0)
    return {"greedy": generator.generate(prompt, PRESETS["greedy"], max_new_tokens=n).text,
            "sampled (T 0.8, top-k 40, top-p 0.95, seed 0)": generator.generate(prompt, sampled, max_new_tokens=n).text}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="results/models/qwen3-shakespeare")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per continuation")
    args = parser.parse_args()
    model = Path(args.model)
    manifest = json.loads((model / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        trained_gguf = Path(tmp) / "trained-F32.gguf"
        convert(model, "F32", trained_gguf)
        windows = held_out_set(model, manifest["training"])
        print(f"held-out windows: {windows.shape[0]} x {windows.shape[1] - 1} predicted tokens "
              f"(works: {', '.join(manifest['held_out_works'])})")
        print(f"ln(vocabulary) = {math.log(151936):.3f} nats; untrained (step 0): {manifest['initial_held_out_loss']:.3f}")
        print(f"trainer (PyTorch, fused loss): {manifest['final_held_out_loss']:.4f} nats after {manifest['steps_done']} steps, "
              f"{manifest['seconds'] / 60:.1f} min")
        ours = engine_cross_entropy(trained_gguf, windows)
        theirs = transformers_cross_entropy(model, windows)
        print(f"NumPy engine on the F32 GGUF: {ours:.4f} nats (perplexity {math.exp(ours):.1f})")
        print(f"transformers float32 eager:   {theirs:.4f} nats; |difference| {abs(ours - theirs):.2e}")

        untrained = Path(tmp) / "untrained"
        untrained.mkdir()
        synthetic.build(untrained, manifest["preset"], manifest["architecture"], seed=0, dtype="float32")
        untrained_gguf = Path(tmp) / "untrained-F32.gguf"
        convert(untrained, "F32", untrained_gguf)
        print(f"\nprompt: {PROMPT!r}")
        for label, gguf in (("untrained", untrained_gguf), ("trained", trained_gguf)):
            for kind, text in continuations(gguf, args.tokens).items():
                print(f"\n--- {label}, {kind}:\n{text}")


if __name__ == "__main__":
    main()
