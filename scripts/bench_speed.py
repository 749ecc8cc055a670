"""Prompt and generation speed + peak memory: edge-repair's runtime vs plain mlx-lm, same model.

Each configuration runs in its own process (the BLAS choice is fixed when mlx.core loads):
  plain-mlx-lm     mlx_lm.load + stream_generate, quantized kernels, MLX's bundled BLAS
  edge-repair-f32  edge_repair.loading.load_patient: OpenBLAS preloaded (Linux), f32 on CPU,
                   decoding from the f32 copies too, MLX's own ops (EDGE_REPAIR_KERNEL=off)
  edge-repair-qmm  the same, decoding steps from the quantized weights (cpu_quantized.py), MLX's
                   RoPE, RMSNorm and SwiGLU (EDGE_REPAIR_KERNEL=matmul)
  edge-repair      the same with the fused native ops (cpu_fused.py)
  llama.cpp        with --gguf FILE (e.g. the default model's GGUF) where llama-cpp-python is
                   installed: a prompt of as many tokens, greedy decoding, all cores
Each row is the best of --repeats generations (the machine's noise only ever slows a run).

    python scripts/bench_speed.py [--model DIR] [--gguf FILE] [--prompt-tokens 256] [--gen-tokens 64] [--repeats 3]
                                  [--out results]

With --out, also results/bench-speed.md (the README's table) and results/bench-speed.json.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
words = ("The quick brown fox jumps over the lazy dog while the river runs to the sea. " * 64).split()
messages = [{"role": "user", "content": " ".join(words)}]
if cfg["mode"] == "llama.cpp":
    from llama_cpp import Llama, __version__
    llm = Llama(model_path=cfg["gguf"], n_ctx=1024, n_threads=os.cpu_count(), n_threads_batch=os.cpu_count(),
                verbose=False)
    prompt = llm.tokenize(" ".join(words).encode(), add_bos=False)[-cfg["prompt_tokens"]:]  # as many tokens
    best_prompt = best_gen = 0.0
    for _ in range(cfg["repeats"]):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        best_prompt = max(best_prompt, len(prompt) / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(cfg["gen_tokens"]):
            llm.eval([llm.sample(temp=0.0)])
        best_gen = max(best_gen, cfg["gen_tokens"] / (time.perf_counter() - start))
    print(json.dumps({"mode": cfg["mode"], "blas": f"llama-cpp-python {__version__}", "prompt_tokens": len(prompt),
                      "prompt_tps": round(best_prompt, 1), "generation_tokens": cfg["gen_tokens"],
                      "generation_tps": round(best_gen, 1), "peak_memory_gb": None}))
    sys.exit(0)
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
prompt = tok.apply_chat_template(messages, add_generation_prompt=True)
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
    parser.add_argument("--gguf", default=None, help="also time llama.cpp (llama-cpp-python) on this GGUF file")
    parser.add_argument("--out", default=None, help="directory for bench-speed.md and bench-speed.json")
    args = parser.parse_args()
    if args.model is None:
        import edge_repair  # noqa: F401
        from edge_repair.loading import resolve

        args.model = str(resolve(None))
    modes = {"plain-mlx-lm": {}, "edge-repair-f32": {"EDGE_REPAIR_KERNEL": "off"},
             "edge-repair-qmm": {"EDGE_REPAIR_KERNEL": "matmul"}, "edge-repair": {}}
    if args.gguf:
        modes["llama.cpp"] = {}
    rows = []
    for mode, env in modes.items():
        cfg = json.dumps({"mode": mode, "model": args.model, "gguf": args.gguf, "prompt_tokens": args.prompt_tokens,
                          "gen_tokens": args.gen_tokens, "repeats": args.repeats})
        out = subprocess.run([sys.executable, "-c", WORKER, cfg], capture_output=True, text=True,
                             env={**os.environ, **env})
        if out.returncode != 0:
            print(f"{mode}: did not run ({(out.stderr.strip().splitlines() or ['no output'])[-1]})", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'runtime':<16} {'prompt tok/s':>12} {'gen tok/s':>10} {'peak GB':>8}  BLAS")
    for r in rows:
        peak = "-" if r["peak_memory_gb"] is None else r["peak_memory_gb"]
        print(f"{r['mode']:<16} {r['prompt_tps']:>12} {r['generation_tps']:>10} {peak:>8}  {r['blas']}")
    print(json.dumps(rows))
    if args.out:
        write_results(Path(args.out), rows, args)


LABELS = {"plain-mlx-lm": "plain mlx-lm (MLX's 4-bit kernels, bundled BLAS)",
          "edge-repair-f32": "edge-repair, f32 decoding, MLX's ops (`EDGE_REPAIR_KERNEL=off`)",
          "edge-repair-qmm": "edge-repair, quantized decoding, MLX's ops (`EDGE_REPAIR_KERNEL=matmul`)",
          "edge-repair": "edge-repair", "llama.cpp": "llama.cpp (llama-cpp-python), the same GGUF"}


def write_results(out: Path, rows: list[dict], args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| runtime | prompt tok/s | generation tok/s | MLX peak |", "|---|---|---|---|"]
    for r in rows:
        peak = "–" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.2f} GB"
        lines.append(f"| {LABELS[r['mode']]} | {r['prompt_tps']} | {r['generation_tps']} | {peak} |")
    lines += ["", f"{args.prompt_tokens}-token prompt, {args.gen_tokens} tokens generated greedily, best of "
              f"{args.repeats} runs each; {platform.machine()}, {os.cpu_count()} CPUs "
              f"(`python scripts/bench_speed.py --out results{' --gguf FILE' if args.gguf else ''}`)", ""]
    (out / "bench-speed.md").write_text("\n".join(lines))
    (out / "bench-speed.json").write_text(json.dumps({"rows": rows, "prompt_tokens": args.prompt_tokens,
                                                      "gen_tokens": args.gen_tokens, "repeats": args.repeats}, indent=1))


if __name__ == "__main__":
    main()
