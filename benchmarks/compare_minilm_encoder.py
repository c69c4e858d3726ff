"""The judge's own MiniLM forward (``judge/minilm.py``: torch, no transformers) against ``transformers.AutoModel``
on the same texts: time to embed model outputs in batches of 32 (interleaved rounds, median), and the largest
difference between the two embeddings. Not part of ``make bench`` (P3 is the figure; this checks that the faster
start did not cost bulk speed: the judge embeds every new output it scores off the answer bank).

    python benchmarks/compare_minilm_encoder.py [--n 512] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics

from _bench import interleaved


def main() -> None:
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    from alpaca_farm_env.data import resolve_data_dir
    from alpaca_farm_env.judge.features import encoder_path
    from alpaca_farm_env.judge.minilm import MiniLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    root = resolve_data_dir(None) / "alpaca_eval_results"
    texts: list[str] = []
    for model in sorted(p.name for p in root.iterdir() if (p / "model_outputs.json").is_file()):
        texts += [r["output"] for r in json.loads((root / model / "model_outputs.json").read_text())][:128]
        if len(texts) >= args.n:
            break
    texts = texts[: args.n]
    ours = MiniLM(encoder_path())
    tok = AutoTokenizer.from_pretrained(str(encoder_path()))
    ref = AutoModel.from_pretrained(str(encoder_path())).eval()

    def transformers_side(max_tokens: int) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
            with torch.inference_mode():
                h = ref(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy())
        return np.concatenate(out)

    def ours_side(max_tokens: int) -> np.ndarray:
        return np.concatenate([ours.embed(texts[i : i + 32], max_tokens) for i in range(0, len(texts), 32)])

    for max_tokens in (32, 128):  # the judge's output and prompt lengths (features.py)
        diff = float(np.abs(ours_side(max_tokens) - transformers_side(max_tokens)).max())
        times = interleaved({"ours": lambda: ours_side(max_tokens), "transformers": lambda: transformers_side(max_tokens)},
                            args.rounds)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{len(texts)} outputs, {max_tokens} word pieces: ours {med['ours']:.2f} s, transformers "
              f"{med['transformers']:.2f} s (ratio {med['ours'] / med['transformers']:.2f}); max abs difference "
              f"{diff:.1e}")


if __name__ == "__main__":
    main()
