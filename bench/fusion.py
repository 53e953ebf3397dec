"""Throughput and peak memory of the Mamba fusion vs the transformer fusion of the same width.

The paper claims linear-time efficiency for its Mamba fusion and never measured it; this
measures it. Both models are the real ``erc.models.fusion.FusionModel`` at the paper's width
(token = text 768 + speaker 128 + face 128 = 1024; Mamba d_state 64, expand 2, d_conv 4;
transformer: one pre-norm encoder layer of the same width, 8 heads, causal mask), its real
forward (per-modality norms and presence masks, mixer, causal mean pooling, classifier),
a cross-entropy loss and the backward pass: one training step without the optimizer.
One dialogue (batch 1) of L utterances (tokens), L = 8, 16, ..., 4096.

    .venv/bin/python bench/fusion.py                          # CPU, the default sweep
    .venv/bin/python bench/fusion.py --scan both              # + the old sequential CPU scan
    .venv/bin/python bench/fusion.py --device cuda            # mamba_ssm kernels when built
    .venv/bin/python bench/fusion.py --device cuda --torch-too  # + the pure-PyTorch Mamba path
    .venv/bin/python bench/fusion.py --lengths 64,512,4096 --repeats 5

Every (model, length) runs in a fresh subprocess: the CPU peak memory is the process's peak
resident set (``ru_maxrss``) minus its value once the model and the inputs are built (what
the step itself needed: activations, gradients, workspace), and one run's freed-but-kept
memory cannot leak into the next. On CUDA it is ``torch.cuda.max_memory_allocated`` minus the
memory allocated before the step. Time: one warm-up step, then ``--repeats`` timed steps
(fewer at long lengths: timing stops once ``--budget`` seconds are spent, after at least
one); the table gives the fastest step (the least disturbed by other work on the machine),
the JSON every step, wall and CPU seconds.

CPU threads: ``--threads`` (default 1). On a shared 2-core machine two OpenMP threads
spend more time waiting for each other than computing on the Mamba scan's many small
steps; one thread gives stable, comparable numbers for both models.

Output: the table on stdout, the empirical scaling exponent (slope of log time and log
memory vs log length over the upper half of the lengths), ``--out`` (a log-log plot, two
panels: time and memory vs length) and the numbers next to it (same name, ``.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_LENGTHS = [2 ** k for k in range(3, 13)]  # 8 .. 4096
NOTE_LENGTHS = (64, 512, 4096)  # the figures the note quotes


# ----------------------------------------------------------------------------- worker


def worker(args: argparse.Namespace) -> dict:
    """One (mixer, scan, length) measurement in this (fresh) process."""
    import gc
    import resource

    import torch
    import torch.nn.functional as F

    from erc.models.fusion import FusionConfig, FusionModel

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    # The paper's configuration (not erc's defaults): full token width, d_state 64, causal,
    # the mean over all past turns.
    config = FusionConfig(mixer=args.mixer, d_model=None, d_state=64, bidirectional=False,
                          window=None)
    model = FusionModel(config).to(device).train()  # a training step: dropout on
    if args.mixer == "mamba":
        model.mixer.scan = args.scan
        model.mixer.use_kernels = not args.no_kernels
    batch, length = args.batch, args.length
    gen = torch.Generator().manual_seed(args.seed)
    features = {m: torch.randn(batch, length, d, generator=gen).to(device)
                for m, d in config.dims.items()}
    # ~10 % of the faces and speakers missing (their learned embeddings are used), text always
    present = {m: (torch.rand(batch, length, generator=gen) > (0.0 if m == "text" else 0.1))
               .to(device) for m in config.modalities}
    valid = torch.ones(batch, length, dtype=torch.bool, device=device)
    labels = torch.randint(0, config.n_classes, (batch, length), generator=gen).to(device)
    if args.mixer == "mamba":
        path = model.mixer.path(features["text"])
        path = f"{path} ({args.scan} scan)" if path == "torch" else path
    else:
        path = "torch nn.TransformerEncoderLayer"

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def step():
        logits = model(features, present, valid)
        loss = F.cross_entropy(logits.reshape(-1, config.n_classes), labels.reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    gc.collect()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    for _ in range(args.warmup):
        step()
    sync()
    walls, cpus = [], []
    while len(walls) < args.repeats and (not walls or sum(walls) < args.budget):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        sync()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    best = min(walls)
    return {"mixer": args.mixer, "scan": args.scan if args.mixer == "mamba" else None,
            "length": length, "batch": batch, "path": path,
            "seconds": best, "median_seconds": sorted(walls)[len(walls) // 2],
            "cpu_seconds": min(cpus), "walls": walls, "cpu_walls": cpus,
            "tokens_per_s": batch * length / best, "peak_mb": peak / 2 ** 20,
            "params": sum(p.numel() for p in model.parameters()), "threads": args.threads,
            "d_model": model.d_model}


# ----------------------------------------------------------------------------- driver


def run_one(args, mixer: str, scan: str, length: int, kernels: bool = True) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--mixer", mixer,
           "--scan", scan, "--length", str(length), "--device", args.device,
           "--threads", str(args.threads), "--batch", str(args.batch), "--seed", str(args.seed),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats),
           "--budget", str(args.budget)] + ([] if kernels else ["--no-kernels"])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=os.pathsep.join(
                   p for p in [str(REPO), os.environ.get("PYTHONPATH")] if p),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    label = (f"{mixer}{'/' + scan if mixer == 'mamba' else ''}{'' if kernels else '/torch'} "
             f"L={length}")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=args.worker_timeout)
    except subprocess.TimeoutExpired:
        print(f"  {label}: no result within {args.worker_timeout} s", file=sys.stderr, flush=True)
        return {"mixer": mixer, "scan": scan, "length": length, "error": "timeout"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        print(f"  {label}: failed (rc {proc.returncode}): {' | '.join(tail)}", file=sys.stderr,
              flush=True)
        return {"mixer": mixer, "scan": scan, "length": length,
                "error": f"rc {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(lines[-1])
    print(f"  {label}: {result['seconds']:.4f} s best of {len(result['walls'])}, "
          f"{result['peak_mb']:.1f} MB  [{result['path']}]  ({time.perf_counter() - t0:.0f} s)",
          file=sys.stderr, flush=True)
    return result


def slope(xs, ys) -> float | None:
    """Least-squares slope of log y vs log x over the upper half of the x (by count)."""
    pts = sorted((x, y) for x, y in zip(xs, ys) if y is not None and y > 0)
    pts = pts[len(pts) // 2:]
    if len(pts) < 2:
        return None
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly)) / den if den else None


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(series: dict, lengths: list[int]) -> str:
    """series: name -> {length: result}. The requested columns for mamba vs transformer,
    then CPU seconds, and the sequential scan / the pure-PyTorch path when measured."""
    mamba, trans = series["mamba"], series["transformer"]
    seq = series.get("mamba-sequential")
    plain = series.get("mamba-torch")
    head = ["length", "mamba s", "transformer s", "ratio m/t", "mamba tok/s", "transformer tok/s",
            "mamba peak MB", "transformer peak MB", "mamba cpu s", "transformer cpu s"]
    if seq is not None:
        head += ["mamba-seq s", "seq/chunked", "mamba-seq peak MB"]
    if plain is not None:
        head += ["mamba-torch s", "torch/kernels", "mamba-torch peak MB"]
    rows = []

    def get(s, length, key):
        r = s.get(length) if s is not None else None
        return None if r is None or "error" in r else r.get(key)

    for length in lengths:
        m, t = get(mamba, length, "seconds"), get(trans, length, "seconds")
        row = [str(length), fmt(m, ".4f"), fmt(t, ".4f"),
               fmt(m / t if m and t else None, ".2f"),
               fmt(get(mamba, length, "tokens_per_s"), ",.0f"),
               fmt(get(trans, length, "tokens_per_s"), ",.0f"),
               fmt(get(mamba, length, "peak_mb"), ",.1f"),
               fmt(get(trans, length, "peak_mb"), ",.1f"),
               fmt(get(mamba, length, "cpu_seconds"), ".4f"),
               fmt(get(trans, length, "cpu_seconds"), ".4f")]
        if seq is not None:
            s = get(seq, length, "seconds")
            row += [fmt(s, ".4f"), fmt(s / m if s and m else None, ".1f"),
                    fmt(get(seq, length, "peak_mb"), ",.1f")]
        if plain is not None:
            p = get(plain, length, "seconds")
            row += [fmt(p, ".4f"), fmt(p / m if p and m else None, ".1f"),
                    fmt(get(plain, length, "peak_mb"), ",.1f")]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.rjust(w) for h, w in zip(head, widths)) + " |",
           "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    out += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(out)


def plot(series: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"mamba": ("Mamba fusion", "C0", "o"),
              "transformer": ("Transformer fusion (same width)", "C3", "s"),
              "mamba-sequential": ("Mamba, sequential CPU scan (before)", "C0", "x")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, ylabel in ((axes[0], "seconds", "forward + backward time per step (s)"),
                            (axes[1], "peak_mb", "peak memory of the step (MB)")):
        anchor = None
        for name, results in series.items():
            pts = sorted((r["length"], r[key]) for r in results.values()
                         if "error" not in r and r.get(key) is not None and r[key] > 0)
            if not pts:
                continue
            label, color, marker = styles.get(name, (name, None, "o"))
            exp = slope([p[0] for p in pts], [p[1] for p in pts])
            if exp is not None:
                label += f"  (slope {exp:.2f})"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color,
                    linestyle=":" if name == "mamba-sequential" else "-", label=label)
            if name == "mamba":
                anchor = (pts[len(pts) // 2][0], pts[-1])
        if anchor is not None:  # reference slopes through the Mamba curve's last point,
            x0, (x1, y1) = anchor  # over the upper half of the lengths (where slopes are fitted)
            xs = [x0, x1]
            ax.plot(xs, [y1 * (x / x1) for x in xs], color="0.6", linestyle="--", linewidth=1,
                    label="O(L) reference")
            ax.plot(xs, [y1 * (x / x1) ** 2 for x in xs], color="0.6", linestyle="-.",
                    linewidth=1, label="O(L²) reference")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length L (utterance tokens per dialogue)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("time vs length (log-log)")
    axes[1].set_title("peak memory vs length (log-log)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default=",".join(map(str, DEFAULT_LENGTHS)),
                    help="comma-separated sequence lengths (tokens per dialogue)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch", type=int, default=1, help="dialogues per step")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5, help="timed steps at most")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="stop timing once this many seconds are spent (at least one step)")
    ap.add_argument("--scan", choices=["chunked", "sequential", "both"], default="chunked",
                    help="the CPU Mamba scan; both: also time the sequential one (before/after)")
    ap.add_argument("--sequential-max", type=int, default=512,
                    help="longest length for the sequential scan with --scan both (it keeps "
                         "every step's states: ~17 GB at 4096)")
    ap.add_argument("--models", default="mamba,transformer")
    ap.add_argument("--torch-too", action="store_true",
                    help="also time the Mamba block's pure-PyTorch path where mamba_ssm's "
                         "kernels run (series mamba-torch: kernels vs no kernels on CUDA)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker-timeout", type=float, default=900.0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "fusion.png")
    # one measurement (internal)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mixer", default="mamba", help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--no-kernels", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)), flush=True)
        return 0

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    plan = []  # (series name, mixer, scan, lengths, mamba_ssm kernels allowed)
    main_scan = "sequential" if args.scan == "sequential" else "chunked"
    for mixer in models:
        plan.append((mixer, mixer, main_scan, lengths, True))
    if args.scan == "both" and "mamba" in models:
        plan.append(("mamba-sequential", "mamba", "sequential",
                     [n for n in lengths if n <= args.sequential_max], True))
    if args.torch_too and "mamba" in models:
        plan.append(("mamba-torch", "mamba", main_scan, lengths, False))

    from erc.models.mamba import kernels_available

    why = kernels_available()
    device_name = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                   else f"{platform.processor() or platform.machine()} CPU, "
                        f"{os.cpu_count()} cores, {args.threads} torch thread(s)")
    print(f"device: {args.device} ({device_name}); torch {torch.__version__}; "
          f"mamba_ssm kernels: {'available' if why is None else why}", flush=True)
    try:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    except OSError:
        load = None
    t_start = time.perf_counter()
    series: dict[str, dict[int, dict]] = {}
    for name, mixer, scan, lens, kernels in plan:
        series[name] = {}
        for length in lens:
            series[name][length] = run_one(args, mixer, scan, length, kernels)

    paths = {name: sorted({r["path"] for r in res.values() if "path" in r})
             for name, res in series.items()}
    print()
    print("Fusion mixers, forward + backward (one training step without the optimizer), "
          f"batch {args.batch}, {args.device}; time: best of the timed steps; ratio = "
          "mamba s / transformer s; peak MB: "
          + ("max_memory_allocated above the pre-step allocation" if args.device.startswith("cuda")
             else "peak RSS above the built model and inputs"))
    for name, p in paths.items():
        print(f"  {name}: {', '.join(p)}")
    print()
    if "mamba" in series and "transformer" in series:
        print(render_table(series, lengths))
    else:
        for name, res in series.items():
            for length, r in sorted(res.items()):
                print(name, length, r.get("seconds"), r.get("peak_mb"), r.get("error", ""))
    print()
    exponents = {}
    for name, res in series.items():
        ok = [r for r in res.values() if "error" not in r]
        upper = sorted(r["length"] for r in ok)[len(ok) // 2:]
        exponents[name] = {
            "time": slope([r["length"] for r in ok], [r["seconds"] for r in ok]),
            "cpu_time": slope([r["length"] for r in ok], [r["cpu_seconds"] for r in ok]),
            "memory": slope([r["length"] for r in ok], [r["peak_mb"] for r in ok]),
            "fit_lengths": upper}
        e = exponents[name]
        span = f"{upper[0]}..{upper[-1]}" if upper else "-"
        print(f"scaling exponent {name:<17} (log-log slope over L = {span}): time "
              f"{fmt(e['time'], '.2f')}, cpu time {fmt(e['cpu_time'], '.2f')}, "
              f"peak memory {fmt(e['memory'], '.2f')}")
    print()
    note = {}
    for length in NOTE_LENGTHS:
        m = series.get("mamba", {}).get(length)
        t = series.get("transformer", {}).get(length)
        if not m or not t or "error" in m or "error" in t:
            continue
        note[length] = {"mamba_s": m["seconds"], "transformer_s": t["seconds"],
                        "ratio": m["seconds"] / t["seconds"],
                        "mamba_tokens_per_s": m["tokens_per_s"],
                        "transformer_tokens_per_s": t["tokens_per_s"],
                        "mamba_peak_mb": m["peak_mb"], "transformer_peak_mb": t["peak_mb"]}
        n = note[length]
        print(f"L = {length:>4}: Mamba {n['mamba_s']:.4f} s ({n['mamba_tokens_per_s']:,.0f} tok/s, "
              f"{n['mamba_peak_mb']:,.1f} MB) vs transformer {n['transformer_s']:.4f} s "
              f"({n['transformer_tokens_per_s']:,.0f} tok/s, {n['transformer_peak_mb']:,.1f} MB): "
              f"Mamba/transformer time {n['ratio']:.2f}x")
    width = next((r["d_model"] for res in series.values() for r in res.values()
                  if "d_model" in r), "?")
    title = (f"Fusion mixers at width {width}, forward+backward (best of timed steps), "
             f"batch {args.batch}, {args.device} ({device_name})")
    plot(series, args.out, title)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "device": args.device, "device_name": device_name, "torch": torch.__version__,
        "kernels": "available" if why is None else why, "threads": args.threads,
        "batch": args.batch, "lengths": lengths, "warmup": args.warmup,
        "repeats": args.repeats, "budget_s": args.budget, "load_average_start": load,
        "wall_s": time.perf_counter() - t_start, "paths": paths, "exponents": exponents,
        "note": {str(k): v for k, v in note.items()},
        "results": {name: [res[n] for n in sorted(res)] for name, res in series.items()},
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(record, indent=2))
    print(f"\nplot: {args.out}\nnumbers: {json_path}\n"
          f"total {record['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
