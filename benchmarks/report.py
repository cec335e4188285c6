"""Writing a benchmark report: JSON with every sample, and markdown tables like llama-bench's."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def to_markdown(report: dict) -> str:
    s = report["settings"]
    main_tests = [t for t in s.get("tests", [f"pp{s['pp']}", f"tg{s['tg']}"]) if not t.startswith(("depth ", "prompt "))]
    machine = report["machine"]
    params = _params(report.get("parameters"))
    idle = s.get("idle")
    quiet = (f"each sample after a quiet moment and redone if other processes used more than {idle['threshold']} "
             f"cores during it (at most {idle['max_redos']} times)" if idle else "samples not checked for other load")
    lines = [
        f"Model **{report['model']}** ({report['model_type']}, {params} parameters); {s['threads']} threads; "
        f"every row warm in its own process, samples interleaved (A B C, B C A, ...); warm-up then {s['reps']} "
        f"repetitions, mean ± std; {quiet}.",
        f"Machine: {machine['cpu']}, {machine['cores_available']} cores, {machine['memory_gb']} GB, "
        f"flags {' '.join(machine['cpu_flags'])}; {report['date']}.",
        "",
        "| model | size | params | backend | precision | threads | test | t/s |",
        "| --- | ---: | ---: | --- | --- | ---: | --- | ---: |",
    ]
    for row in report["results"]:
        size = f"{row['size_mb']:.0f} MB" if row.get("size_mb") else "-"
        threads = (row.get("settings") or {}).get("threads", s["threads"])  # session-options rows set their own
        head = f"| {report['model']} | {size} | {params} | {row['backend']} | {row['precision']} | {threads} |"
        if not row.get("ok"):
            lines.append(f"{head} - | {_why(row)} |")
            continue
        for test in main_tests:
            if test in row:
                lines.append(f"{head} {test} | {_pm(row[test])} |")
    depth = s.get("depth") if f"pp{s.get('depth')}" in main_tests and s.get("depth") != s["pp"] else None
    long_ttft = f" TTFT ms @ {depth} |" if depth else ""
    lines += [
        "",
        f"| backend | precision | load s | peak RSS MB | TTFT ms (pp{s['pp']}) |{long_ttft} token p50 / p90 / p99 ms "
        "| perplexity | KLD vs fp32 | top-1 vs fp32 |",
        "| --- | --- | ---: | ---: | ---: |" + (" ---: |" if depth else "") + " ---: | ---: | ---: | ---: |",
    ]
    for row in report["results"]:
        if not row.get("ok"):
            continue
        lat = row["token_latency_ms"]
        ppl = f"{row['perplexity']:.2f}" if row.get("perplexity") else "n/a"
        lines.append(
            f"| {row['backend']} | {row['precision']} | {row['load_s']:.2f} | {row['peak_rss_mb']:.0f} | "
            f"{_pm(row['ttft_ms'], 0)} |" + (f" {_pm(row[f'ttft_ms_{depth}'], 0)} |" if depth else "")
            + f" {lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} | {ppl} | "
            f"{_num(row.get('kld'), '.4f')} | {_num(row.get('top1'), '.1%')} |"
        )
    lines += _settings_table(report["results"])
    scaling = [r for r in report["results"] if r.get("ok") and "tg_by_depth" in r]
    if scaling:
        depths = list(scaling[0]["tg_by_depth"])
        lengths = list(scaling[0].get("ttft_ms_by_prompt", {}))
        lines += ["", "| backend | precision | " + " | ".join(f"tg @ depth {d}" for d in depths)
                  + "".join(f" | TTFT ms @ {n}" for n in lengths) + " |",
                  "| --- | --- |" + " ---: |" * (len(depths) + len(lengths))]
        for row in scaling:
            cells = [f"{row['tg_by_depth'][d]['mean']:.1f}" for d in depths]
            cells += [f"{row['ttft_ms_by_prompt'][n]['mean']:.0f}" for n in lengths]
            lines.append(f"| {row['backend']} | {row['precision']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _settings_table(rows: list[dict]) -> list[str]:
    """How each row was built and run, and how quiet the machine was for its samples."""
    lines = ["", "| backend | precision | settings | samples | redone | waited s | kept disturbed |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        settings = row.get("settings") or {}
        text = ", ".join(f"{k}={_setting(v)}" for k, v in settings.items() if v is not None) or "-"
        idle = row.get("idle")
        counts = (f"{idle['samples']} | {idle['redone']} | {idle['waited_s']:.0f} | {idle['disturbed_kept']}"
                  if idle else "- | - | - | -")
        lines.append(f"| {row['backend']} | {row['precision']} | {text.replace('|', '/')} | {counts} |")
    return lines


def _setting(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _pm(summary: dict, digits: int = 2) -> str:
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def _why(row: dict) -> str:
    reason = row.get("skipped") or row.get("error") or "failed"
    return ("skipped: " if row.get("skipped") else "failed: ") + reason.replace("|", "/").replace("\n", " ")[:160]


def _params(count: int | None) -> str:
    if not count:
        return "-"
    return f"{count / 1e9:.2f} B" if count >= 1e9 else f"{count / 1e6:.1f} M"
