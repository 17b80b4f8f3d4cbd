"""What pretraining bought: held-out loss by two runtimes, and continuations before and after.

    python benchmarks/trained_model.py [--model results/models/qwen3-shakespeare]

Scores the held-out Shakespeare windows of the model's own training recipe with the NumPy engine
(on an F32 GGUF made here) and with transformers, prints both next to the trainer's figure and
ln(151936), then prints greedy and sampled continuations of a prompt from the trained model and
from its untrained twin (the same architecture, seeded random weights), as the samples stage does.
"""

import argparse
import json
import math
import tempfile
from pathlib import Path

from qwen3repro.accuracy.scoring import engine_cross_entropy, transformers_cross_entropy
from qwen3repro.convert.converter import convert
from qwen3repro.model.train import held_out_set
from qwen3repro.sweep.samples import DEFAULTS, continuations, untrained_twin


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
        print(
            f"held-out windows: {windows.shape[0]} x {windows.shape[1] - 1} predicted tokens "
            f"(works: {', '.join(manifest['held_out_works'])})"
        )
        print(
            f"ln(vocabulary) = {math.log(151936):.3f} nats; untrained (step 0): {manifest['initial_held_out_loss']:.3f}"
        )
        print(
            f"trainer (PyTorch, fused loss): {manifest['final_held_out_loss']:.4f} nats after "
            f"{manifest['steps_done']} steps, "
            f"{manifest['seconds'] / 60:.1f} min"
        )
        ours = engine_cross_entropy(trained_gguf, windows)
        theirs = transformers_cross_entropy(model, windows)
        print(f"NumPy engine on the F32 GGUF: {ours:.4f} nats (perplexity {math.exp(ours):.1f})")
        print(f"transformers float32 eager:   {theirs:.4f} nats; |difference| {abs(ours - theirs):.2e}")

        settings = {**DEFAULTS, "prompts": DEFAULTS["prompts"][:1], "max_new_tokens": args.tokens}
        print(f"\nprompt: {settings['prompts'][0]!r}")
        for label, gguf in (("untrained", untrained_twin(manifest, Path(tmp))), ("trained", trained_gguf)):
            for sample in continuations(gguf, settings):
                print(f"\n--- {label}, {sample['kind']} {sample['params']}:\n{sample['text']}")


if __name__ == "__main__":
    main()
