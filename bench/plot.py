"""Plot the latency percentiles of a benchmark run, with and without telemetry.

`make bench` calls this for each run. To plot a saved run again:
.venv/bin/python -m bench.plot bench/results/RUN.json OUT.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Scenarios of the plot, each with its sides in drawing order.
PANELS = {
    "authenticated route": ("route-off", "route-on", "route-on-10%", "route-instrumentator"),
    "generation, one at a time": ("off", "on", "collector down", "instrumentator"),
}
LABELS = {
    "route-off": "telemetry off",
    "route-on": "telemetry on",
    "route-on-10%": "on, 10% of traces",
    "route-instrumentator": "prometheus-fastapi-instrumentator",
    "off": "telemetry off",
    "on": "telemetry on",
    "collector down": "on, collector down",
    "instrumentator": "prometheus-fastapi-instrumentator",
}


def plot_latencies(
    latencies: dict[str, dict[str, dict[str, float]]], title: str, out: Path
) -> None:
    """Draw one panel per scenario: the percentiles of each side as a line, in ms."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot

    panels = [name for name in PANELS if name in latencies]
    figure, axes = pyplot.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for axis, scenario in zip(axes[0], panels, strict=True):
        for side in PANELS[scenario]:
            if side not in latencies[scenario]:
                continue
            percentiles = latencies[scenario][side]
            axis.plot(list(percentiles), list(percentiles.values()), marker="o", label=LABELS[side])
        axis.set_title(scenario)
        axis.set_xlabel("percentile")
        axis.set_ylabel("latency (ms)")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    pyplot.close(figure)


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.plot RUN.json OUT.png")
    data = json.loads(Path(sys.argv[1]).read_text())
    plot_latencies(
        data["latencies_ms"], f"Latency percentiles, run {data['started']}", Path(sys.argv[2])
    )


if __name__ == "__main__":
    main()
