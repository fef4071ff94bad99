"""The figures as Markdown: one table per hot path, automl_db against its floor (the headline ratio)
and its other baselines, with issue 10's goals beside each table, marked met or not met from the
figures themselves; and plain tables of measured figures (replication) that have no floor."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Goal:
    """automl_db / `baseline` must be >= bound (throughput), or <= bound when `at_most` (time)."""

    baseline: str
    bound: float
    at_most: bool = False

    def met(self, ratio: float | None) -> bool | None:
        if ratio is None:
            return None
        return ratio <= self.bound if self.at_most else ratio >= self.bound

    def __str__(self) -> str:
        if self.at_most:
            return f"≤ {self.bound:.1f} x {self.baseline} time"
        return f"≥ {self.bound:.1f} of {self.baseline}"


@dataclass(frozen=True)
class Row:
    case: str
    project: float
    #: Baseline label -> figure; None when that baseline could not be measured.
    baselines: dict[str, float | None]
    goals: tuple[Goal, ...]
    unit: str

    def ratio(self, baseline: str) -> float | None:
        figure = self.baselines.get(baseline)
        return self.project / figure if figure else None

    def verdicts(self) -> list[tuple[Goal, bool | None]]:
        return [(goal, goal.met(self.ratio(goal.baseline))) for goal in self.goals]


@dataclass(frozen=True)
class Table:
    key: str  # the --only name
    title: str
    about: str
    project: str  # header of the project's column
    baselines: tuple[str, ...]  # column order; the first is the floor, whose ratio is the headline
    setting: str  # clients, seconds, rounds
    rows: list[Row]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Part:
    """One plain table: a caption, a header, rows of rendered cells."""

    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Figures:
    """Measured figures without a floor or goals (replica lag, failover time), in one or more tables."""

    key: str  # the --only name
    title: str
    about: str
    setting: str
    parts: list[Part]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Run:
    """Where and how the figures were produced."""

    command: str
    only_command: str  # with {key} for the table's --only name
    server: str  # "PostgreSQL 18.4 (embedded)"
    cores: int
    python: str
    date: str
    commit: str


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}"


def _ratio(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"**{value:.2f}**" if bold else f"{value:.2f}"


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "**not met**")


def verdicts(t: Table) -> str:
    """Each goal of the table, met or not, naming the cases that miss it."""
    pairs = [(row.case, str(goal), met) for row in t.rows for goal, met in row.verdicts()]
    count = sum(1 for _, _, met in pairs if met)
    parts = []
    for goal in dict.fromkeys(goal for _, goal, _ in pairs):
        cases = [(case, met) for case, g, met in pairs if g == goal]
        missed = [case + (" (n/a)" if met is None else "") for case, met in cases if not met]
        if not missed:
            parts.append(f"{goal}: met" + (" in every case" if len(cases) > 1 else ""))
        elif len(missed) == len(cases):
            parts.append(f"{goal}: **not met**" + (" in any case" if len(cases) > 1 else ""))
        else:
            parts.append(f"{goal}: **not met** for {'; '.join(missed)}")
    return f"{count} of {len(pairs)} met. " + ". ".join(parts) + "."


def table(t: Table, run: Run) -> list[str]:
    header = ["case", t.project]
    for i, baseline in enumerate(t.baselines):
        header += [baseline, f"{t.project} / {baseline}" + (" (headline)" if i == 0 else "")]
    header.append("goals (issue 10)")
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 2) + "|---|"]
    for row in t.rows:
        cells = [row.case, _figure(row.project, row.unit)]
        for i, baseline in enumerate(t.baselines):
            cells += [_figure(row.baselines.get(baseline), row.unit), _ratio(row.ratio(baseline), bold=i == 0)]
        cells.append("; ".join(f"{goal}: {_verdict(met)}" for goal, met in row.verdicts()))
        lines.append("| " + " | ".join(cells) + " |")
    return [
        f"## {t.title}",
        "",
        f"Produced by `{run.command}`; this table alone: `{run.only_command.format(key=t.key)}` (prints, writes"
        f" nothing). {run.server}, {run.cores} cores, {t.setting}.",
        "",
        t.about,
        "",
        *lines,
        "",
        f"Goals of issue 10: {verdicts(t)}",
        *(["", *t.notes] if t.notes else []),
        "",
    ]


def figures(f: Figures, run: Run) -> list[str]:
    lines = [
        f"## {f.title}",
        "",
        f"Produced by `{run.command}`; this table alone: `{run.only_command.format(key=f.key)}` (prints, writes"
        f" nothing). {run.server}, {run.cores} cores, {f.setting}.",
        "",
        f.about,
        "",
    ]
    for part in f.parts:
        lines += [part.caption, "", "| " + " | ".join(part.header) + " |",
                  "|---" + "|---:" * (len(part.header) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in part.rows]
        lines.append("")
    return lines + ([*f.notes, ""] if f.notes else [])


def section(t: Table | Figures, run: Run) -> list[str]:
    return table(t, run) if isinstance(t, Table) else figures(t, run)


def document(sections: list[Table | Figures], run: Run, broken: int) -> str:
    tables = [t for t in sections if isinstance(t, Table)]
    every = [met for t in tables for row in t.rows for _, met in row.verdicts()]
    summary = [f"- {t.title}: {verdicts(t)}" for t in tables]
    lines = [
        "# Benchmarks",
        "",
        "Every figure is written by `just bench` (`python -m bench.run`); do not edit by hand.",
        f"Produced by `{run.command}` on {run.date} at commit {run.commit}: {run.server}, {run.cores} cores,"
        f" Python {run.python}.",
        "",
        "Each hot path is measured against its **physical floor** (the least PostgreSQL work that moves",
        "the same data, on minimal tables), which gives the headline ratio; the *same schema, no triggers*",
        "column is a copy of the project's tables written by hand, so automl_db / same schema is the cost of",
        "the database keeping its own rules. Every figure is the median of interleaved rounds: each round",
        "runs every side once, in a rotating order, so drift hits all sides alike.",
        "",
        f"Issue 10's goals: {every.count(True)} of {len(every)} met.",
        "",
        *summary,
        "",
    ]
    for t in sections:
        lines += section(t, run)
    lines += [f"`check_integrity()` after the runs: {broken} broken invariants.", ""]
    return "\n".join(lines)
