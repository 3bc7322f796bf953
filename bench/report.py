"""Results of one benchmark run: each row compares two sides over alternating repetitions.

A row contains one value per repetition for each side, and the paired result of each repetition
(a ratio or a difference of the two sides measured back to back). The row's result is the median
of the paired results and its spread their range. The verdict is only "met" or "missed" when the
whole range falls on one side of the target; otherwise the run does not settle it.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.load import nearest_rank
from bench.plot import plot_latencies

MET = "met"
MISSED = "missed"
UNSETTLED = "not settled: the spread crosses the target"
NO_TARGET = "reference"
PERCENTILES = {"p50": 0.50, "p75": 0.75, "p90": 0.90, "p95": 0.95, "p99": 0.99}


@dataclass
class Row:
    """One measured quantity: `result` in `unit`, from `pairs`, against `target`."""

    scenario: str
    quantity: str
    unit: str
    sides: dict[str, list[float]]
    pairs: list[float]
    target: str = ""
    at_least: float | None = None
    at_most: float | None = None
    note: str = ""
    side_unit: str = ""

    @property
    def result(self) -> float:
        return statistics.median(self.pairs)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.pairs), max(self.pairs)

    @property
    def verdict(self) -> str:
        low, high = self.spread
        if self.at_least is not None:
            if low >= self.at_least:
                return MET
            if high < self.at_least:
                return MISSED
            return UNSETTLED
        if self.at_most is not None:
            if high <= self.at_most:
                return MET
            if low > self.at_most:
                return MISSED
            return UNSETTLED
        return NO_TARGET

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "result": self.result,
            "spread": self.spread,
            "verdict": self.verdict,
        }


def ratio_row(
    scenario: str,
    quantity: str,
    sides: dict[str, list[float]],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    target: str = "",
    side_unit: str = "req/s",
) -> Row:
    """Build a row of the first side divided by the second, paired repetition by repetition."""
    (_, top), (_, bottom) = sides.items()
    pairs = [a / b for a, b in zip(top, bottom, strict=True)]
    row = Row(scenario, quantity, "ratio", sides, pairs, target, at_least, at_most)
    row.side_unit = side_unit
    effect = abs(row.result - 1)
    width = row.spread[1] - row.spread[0]
    if width > effect:
        row.note = f"spread {width:.3f} is wider than the effect {effect:.3f}"
    return row


def difference_row(
    scenario: str,
    quantity: str,
    sides: dict[str, list[float]],
    *,
    unit: str = "ms",
    at_most: float | None = None,
    target: str = "",
) -> Row:
    """Build a row of the first side minus the second, paired repetition by repetition."""
    (_, top), (_, bottom) = sides.items()
    pairs = [a - b for a, b in zip(top, bottom, strict=True)]
    row = Row(scenario, quantity, unit, sides, pairs, target, at_most=at_most, side_unit=unit)
    low, high = row.spread
    if low < 0 < high:
        row.note = f"the difference changes sign across repetitions ({low:+.2f} to {high:+.2f})"
    return row


def value_row(
    scenario: str,
    quantity: str,
    values: list[float],
    *,
    unit: str,
    at_most: float | None = None,
    at_least: float | None = None,
    target: str = "",
) -> Row:
    """Build a row of one side's own values, one per repetition or sample."""
    return Row(scenario, quantity, unit, {quantity: values}, values, target, at_least, at_most)


def machine() -> dict[str, object]:
    """Describe what the numbers depend on: cores, CPU, memory, Python and the load at the start."""
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    machine: dict[str, object] = field(default_factory=machine)
    # Latency percentiles in ms per scenario and side, over all repetitions together.
    latencies: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, row: Row, log: Callable[[str], None] = print) -> None:
        self.rows.append(row)
        log(f"  {_line(row)}")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """Rebuild a saved run, to render its Markdown again."""
        fields = {name: value for name, value in Row.__dataclass_fields__.items() if value.init}
        rows = [Row(**{key: row[key] for key in fields if key in row}) for row in data["rows"]]
        return cls(
            rows=rows,
            facts=data["facts"],
            started=data["started"],
            machine=data["machine"],
            latencies=data.get("latencies_ms", {}),
        )

    def add_latencies(self, scenario: str, side: str, latencies_ms: list[float]) -> None:
        ordered = sorted(latencies_ms)
        self.latencies.setdefault(scenario, {})[side] = {
            name: nearest_rank(ordered, fraction) for name, fraction in PERCENTILES.items()
        }

    def to_markdown(self) -> str:
        """Render the run as Markdown: the machine, a table per scenario, then the facts."""
        host = self.machine
        lines = [
            f"Run {self.started} on {host['usable_cpus']} usable CPUs ({host['cpu_model']}), "
            f"{host['memory_gb']} GB, Python {host['python']}; load average at start "
            f"{host['load_average_at_start']}.",
        ]
        scenarios = list(dict.fromkeys(row.scenario for row in self.rows))
        for scenario in scenarios:
            lines += [
                "",
                f"### {scenario}",
                "",
                "| quantity | ours | compared with | result | spread | target | verdict |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [_table_line(row) for row in self.rows if row.scenario == scenario]
        if self.facts:
            lines += ["", "### Other measurements", "", "| measured | value |", "|---|---|"]
            lines += [f"| {name} | {value} |" for name, value in self.facts.items()]
        return "\n".join(lines) + "\n"

    def save(self, folder: Path) -> list[Path]:
        """Write the run as JSON and Markdown, and its latency plot when there are latencies."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = self.started.replace(":", "").replace("+0000", "Z")
        data = {
            "started": self.started,
            "machine": self.machine,
            "rows": [row.to_json() for row in self.rows],
            "facts": self.facts,
            "latencies_ms": self.latencies,
        }
        json_path = folder / f"{stem}.json"
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        markdown_path = folder / f"{stem}.md"
        markdown_path.write_text(self.to_markdown())
        written = [json_path, markdown_path]
        if self.latencies:
            title = f"Latency percentiles, run {self.started}"
            plot_latencies(self.latencies, title, folder / f"{stem}.png")
            written.append(folder / f"{stem}.png")
        return written


def _number(value: float, unit: str) -> str:
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "req/s":
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}" if abs(value) < 10 else f"{value:.1f} {unit}"


def _table_line(row: Row) -> str:
    """Render one row of a scenario's table, with the median of each side."""
    low, high = row.spread
    sides = [
        f"{name}: {_number(statistics.median(values), row.side_unit)}"
        for name, values in row.sides.items()
    ]
    ours, compared = (sides[0], sides[1]) if len(sides) > 1 else ("", "")
    verdict = row.verdict + (f" ({row.note})" if row.note else "")
    return (
        f"| {row.quantity} | {ours} | {compared} | {_number(row.result, row.unit)} | "
        f"{_number(low, row.unit)} to {_number(high, row.unit)} | {row.target} | {verdict} |"
    )


def _line(row: Row) -> str:
    low, high = row.spread
    return (
        f"{row.scenario} / {row.quantity}: {_number(row.result, row.unit)} "
        f"({_number(low, row.unit)} to {_number(high, row.unit)}) target {row.target or '-'}: "
        f"{row.verdict}{' (' + row.note + ')' if row.note else ''}"
    )
