"""PNG plots of a report: tokens/s by backend, tokens/s against context depth, TTFT against prompt length."""

from __future__ import annotations

from pathlib import Path


def write_plot(report: dict, path: str | Path) -> None:
    """One PNG with three panels (needs matplotlib: pip install 'edgelm[bench]')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["settings"]
    rows = [r for r in report["results"] if r.get("ok")]
    labels = [f"{r['backend']}\n{r['precision']}" for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))

    ax = axes[0]
    pp_key, tg_key = f"pp{s['pp']}", f"tg{s['tg']}"
    x = range(len(rows))
    tg = [r[tg_key]["mean"] for r in rows]
    ax.bar(x, tg, yerr=[r[tg_key]["std"] for r in rows], color=[_color(r) for r in rows], capsize=3)
    for i, value in enumerate(tg):
        ax.text(i, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels, fontsize=7, rotation=35, ha="right")
    ax.set_ylabel(f"generation tokens/s ({tg_key})")
    ax.set_title(f"{tg_key} by backend (higher is better)\n{pp_key} in the table")

    for r in rows:
        if "tg_by_depth" in r:
            depths = [int(d) for d in r["tg_by_depth"]]
            axes[1].plot(depths, [v["mean"] for v in r["tg_by_depth"].values()], marker="o",
                         label=f"{r['backend']} {r['precision']}")
        if "ttft_ms_by_prompt" in r:
            lengths = [int(n) for n in r["ttft_ms_by_prompt"]]
            axes[2].plot(lengths, [v["mean"] for v in r["ttft_ms_by_prompt"].values()], marker="o",
                         label=f"{r['backend']} {r['precision']}")
    axes[1].set_xlabel("context depth (tokens)")
    axes[1].set_ylabel("generation tokens/s")
    axes[1].set_title("generation speed against context depth")
    axes[2].set_xlabel("prompt length (tokens)")
    axes[2].set_ylabel("time to first token (ms)")
    axes[2].set_yscale("log")
    axes[2].set_title("time to first token against prompt length")
    for ax in axes[1:]:
        if ax.lines:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{report['model']} on {report['machine']['cpu']}, {s['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _color(row: dict) -> str:
    return {"edgelm": "tab:green", "transformers": "tab:gray", "optimum": "tab:orange", "genai": "tab:blue",
            "llamacpp": "tab:purple"}.get(row["backend"], "tab:red")
