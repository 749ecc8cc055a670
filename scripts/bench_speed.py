"""Prompt and generation speed + peak memory: edge-repair's runtime vs plain mlx-lm, same model.

Each configuration runs in its own process (the BLAS choice is fixed when mlx.core loads):
  plain-mlx-lm     mlx_lm.load + stream_generate, quantized kernels, MLX's bundled BLAS
  edge-repair-f32  edge_repair.loading.load_patient: OpenBLAS preloaded (Linux), f32 on CPU,
                   decoding from the f32 copies too (EDGE_REPAIR_KERNEL=off)
  edge-repair      the same, decoding steps from the quantized weights (cpu_quantized.py)
Each row is the best of --repeats generations (the machine's noise only ever slows a run).

    python scripts/bench_speed.py [--model DIR] [--prompt-tokens 256] [--gen-tokens 64] [--repeats 3]
"""

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
cfg = json.loads(sys.argv[1])
if cfg["mode"].startswith("edge-repair"):
    import edge_repair
    from edge_repair.loading import load_patient
    from edge_repair._blas import loaded_blas
    p = load_patient(cfg["model"]); model, tok = p.model, p.tokenizer
    blas = loaded_blas()
else:
    import mlx_lm
    model, tok = mlx_lm.load(cfg["model"])
    blas = "bundled"
import mlx.core as mx
from mlx_lm import stream_generate
words = ("The quick brown fox jumps over the lazy dog while the river runs to the sea. " * 64).split()
prompt = tok.apply_chat_template([{"role": "user", "content": " ".join(words)}], add_generation_prompt=True)
prompt = prompt[-cfg["prompt_tokens"]:]
for _ in stream_generate(model, tok, prompt[:16], max_tokens=2): pass   # warm-up
mx.reset_peak_memory()
runs = []
for _ in range(cfg["repeats"]):
    for r in stream_generate(model, tok, prompt, max_tokens=cfg["gen_tokens"]): pass
    runs.append(r)
print(json.dumps({"mode": cfg["mode"], "blas": blas, "prompt_tokens": r.prompt_tokens,
                  "prompt_tps": round(max(r.prompt_tps for r in runs), 1), "generation_tokens": r.generation_tokens,
                  "generation_tps": round(max(r.generation_tps for r in runs), 1),
                  "peak_memory_gb": round(mx.get_peak_memory() / 1e9, 3)}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="MLX model dir (default: the embedded default)")
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.model is None:
        import edge_repair  # noqa: F401
        from edge_repair.loading import resolve

        args.model = str(resolve(None))
    rows = []
    for mode in ("plain-mlx-lm", "edge-repair-f32", "edge-repair"):
        cfg = json.dumps({"mode": mode, "model": args.model, "prompt_tokens": args.prompt_tokens,
                          "gen_tokens": args.gen_tokens, "repeats": args.repeats})
        env = {**os.environ, **({"EDGE_REPAIR_KERNEL": "off"} if mode == "edge-repair-f32" else {})}
        out = subprocess.run([sys.executable, "-c", WORKER, cfg], capture_output=True, text=True, check=True, env=env)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'runtime':<16} {'prompt tok/s':>12} {'gen tok/s':>10} {'peak GB':>8}  BLAS")
    for r in rows:
        print(f"{r['mode']:<16} {r['prompt_tps']:>12} {r['generation_tps']:>10} {r['peak_memory_gb']:>8}  {r['blas']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
