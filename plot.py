"""
A picture of training runs: the train loss and the val bits per byte of each out_dir's log.jsonl (train.py writes
one line per log step and per evaluation), against the step and against the seconds since launch, in one PNG.

  python plot.py out-tinystories-cpu                          # -> out-tinystories-cpu/curves.png
  python plot.py out-a out-b out-c --out=sweep.png --title="lr sweep"   # runs side by side
"""
import json
import os
import sys

from configurator import configure
from errors import one_line_errors


def read_log(out_dir: str) -> list[dict]:
    """The rows of out_dir/log.jsonl. SystemExit naming the file and the fix when it is missing or unreadable."""
    path = os.path.join(out_dir, "log.jsonl")
    if not os.path.isfile(path):
        raise SystemExit(f"no {path}: train.py writes it while it trains (runs from before it existed have none)")
    try:
        return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    except ValueError as e:
        raise SystemExit(f"{path} is not JSON lines ({e}): was it cut short?") from None


def plot(out_dirs: list[str], out: str, title: str = ""):
    """Draw the curves of out_dirs into out (PNG): a row per x axis (step, seconds), a column per y (train loss, val
    bits per byte); the val curves mark each evaluation, one curve per number of val tokens scored, each labelled
    with its last bpb."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for i, d in enumerate(out_dirs):
        rows, color = read_log(d), f"C{i}"  # one colour per run, in every panel
        sizes = list(dict.fromkeys(row["val_tokens"] for row in rows if "val_bpb" in row))
        for r, x in enumerate(("iter", "seconds")):
            steps = [row for row in rows if "loss" in row]
            axes[r][0].plot([s[x] for s in steps], [s["loss"] for s in steps], color=color, label=d, linewidth=1)
            # one curve per size of the scored val: evaluations during training may score its first eval_tokens, the
            # final one all of it, and the two are different texts, not one curve. The largest (all of val) is a
            # star, a smaller one a dashed line of dots
            for n in sizes:
                evals = [row for row in rows if row.get("val_tokens") == n]
                full = n == max(sizes)
                axes[r][1].plot([e[x] for e in evals], [e["val_bpb"] for e in evals], color=color,
                                marker="*" if full else "o", markersize=12 if full else 5, linestyle="-" if full
                                else "--", label=f"{d}, {n:,} val tokens: {evals[-1]['val_bpb']:.4f}")
    for r, x in enumerate(("step", "seconds since launch")):
        for c, y in enumerate(("train loss (nats/token)", "val bits per byte")):
            axes[r][c].set(xlabel=x, ylabel=y)
            axes[r][c].grid(alpha=0.3)
            axes[r][c].legend(fontsize=8)
    fig.suptitle(title or ", ".join(out_dirs))
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    one_line_errors()
    dirs = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not dirs:
        raise SystemExit(__doc__)
    args = configure(dict(
        # -------------------------------------------------------------------------------------------------------------
        out="",             # the PNG to write (default: curves.png in the first out_dir)
        title="",           # the figure's title (default: the folders' names)
        # -------------------------------------------------------------------------------------------------------------
    ), [a for a in sys.argv[1:] if a.startswith("--")], __file__)
    out = args["out"] or os.path.join(dirs[0], "curves.png")
    plot(dirs, out, args["title"])
    print(f"wrote {out}")
