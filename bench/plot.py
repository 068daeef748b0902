"""PNG plots of a bench/run.py results file (matplotlib, headless).

    .venv/bin/python bench/plot.py bench/results/STAMP.json [--out DIR]

Per scenario: throughput over time (messages accepted by the MTA and recipients held by
the sinks, per second, from the first injection) and the latency distributions (ingest:
end of DATA to 250; delivery delay: injection to the sink's 250), mta against Postfix
(first run of each). Plus `summary.png`: the headline rate of every scenario side by side.
`PUBLISHED` names the ones bench/run.py --publish copies to bench/plots/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display here
import matplotlib.pyplot as plt

PUBLISHED = {"summary", "throughput-relay-1k", "latency-relay-1k", "throughput-queue",
             "throughput-tempfail", "latency-sites-10"}
COLORS = {"mta": "tab:blue", "postfix": "tab:orange", "mta-plain": "tab:green"}


def _series(bins: list, bin_seconds: float, t0: float, scale: float = 1.0
            ) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for b, n in bins:
        xs.append(b * bin_seconds - t0)
        ys.append(n / bin_seconds * scale)
    return xs, ys


def _first(results: list[dict], scenario: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in results:
        if r["scenario"] == scenario and r["mta"] not in out:
            out[r["mta"]] = r
    return out


def throughput(scenario: str, runs: dict[str, dict], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    for mta, r in runs.items():
        c = COLORS.get(mta)
        bs = r.get("bin_seconds", 0.25)
        if scenario == "queue":  # the drain, from the flush
            xs, ys = _series(r.get("sink_bins", []), bs, r.get("drain_start", 0))
            ax.plot(xs, ys, color=c, label=f"{mta}: delivered rcpt/s (drain)")
            continue
        t0 = r.get("first_time", 0)
        xs, ys = _series(r.get("ingest_bins", []), bs, t0)
        ax.plot(xs, ys, color=c, linestyle="--", label=f"{mta}: accepted msg/s")
        if r.get("sink_bins"):
            xs, ys = _series(r["sink_bins"], bs, t0)
            ax.plot(xs, ys, color=c, label=f"{mta}: delivered rcpt/s")
    ax.set_xlabel("seconds since first injection" if scenario != "queue"
                  else "seconds since the first delivery of the drain")
    ax.set_ylabel("per second (0.25 s bins)")
    ax.set_title(f"{scenario}: throughput over time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency(scenario: str, runs: dict[str, dict], path: Path) -> Path | None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, key, title in ((axes[0], "ingest_q", "ingest: end of DATA -> 250"),
                           (axes[1], "delay_q", "delivery delay: injection -> sink 250")):
        for mta, r in runs.items():
            q = r.get(key) or []
            if q:
                drawn = True
                ax.plot([v * 1000 for v in q], [i / 2 for i in range(len(q))],
                        color=COLORS.get(mta), label=mta)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("percentile")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle(f"{scenario}: latency distribution (CDF)")
    fig.tight_layout()
    if drawn:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return path if drawn else None


def summary(results: list[dict], path: Path) -> Path:
    scenarios = list(dict.fromkeys(r["scenario"] for r in results))
    mtas = list(dict.fromkeys(r["mta"] for r in results))
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(mtas), 1)
    for j, mta in enumerate(mtas):
        vals = []
        for sc in scenarios:
            rows = [r for r in results if r["scenario"] == sc and r["mta"] == mta]
            key = ("drain_rate" if sc == "queue" else
                   "ingest_rate" if sc == "ingest" else "e2e_rate")
            v = sorted(r.get(key) or 0 for r in rows)
            vals.append(v[len(v) // 2] if v else 0)
        ax.bar([i + j * width for i in range(len(scenarios))], vals, width,
               label=mta, color=COLORS.get(mta))
    ax.set_xticks([i + width * (len(mtas) - 1) / 2 for i in range(len(scenarios))])
    ax.set_xticklabels(scenarios, rotation=20, fontsize=8)
    ax.set_ylabel("messages/s (median)")
    ax.set_title("ingest (ingest), end to end (relay), drain (queue)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(doc: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    results = doc["results"]
    paths = [summary(results, out / "summary.png")]
    for sc in dict.fromkeys(r["scenario"] for r in results):
        runs = _first(results, sc)
        paths.append(throughput(sc, runs, out / f"throughput-{sc}.png"))
        lat = latency(sc, runs, out / f"latency-{sc}.png")
        if lat is not None:
            paths.append(lat)
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("--out", type=Path, help="default: next to the results, same stem")
    args = ap.parse_args()
    doc = json.loads(args.results.read_text())
    out = args.out or args.results.with_suffix("")
    for p in plot_all(doc, out):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
