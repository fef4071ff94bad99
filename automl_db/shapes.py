"""Hand-written models for JSON columns whose shape the schema fixes (the codegen override map).

The database checks these shapes too (workflow_graph_is_valid, jsonb_is_number_map); these
models give services the same shape as typed Python objects.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict


class WorkflowNode(BaseModel):
    """One node of a workflow graph; node-specific settings ride along as extra keys."""

    model_config = ConfigDict(extra="allow")

    id: str
    type: str | None = None


class WorkflowEdge(BaseModel):
    """A directed edge: data flows from source to target."""

    model_config = ConfigDict(extra="allow")

    source: str
    target: str


class WorkflowGraph(BaseModel):
    """workflows.definition and workflow_snapshots.snapshot_data."""

    model_config = ConfigDict(extra="allow")

    nodes: list[WorkflowNode] = []
    edges: list[WorkflowEdge] = []


#: Metric summaries ({"accuracy": 0.93}); models.metrics and experiment_runs.metrics.
Metrics = dict[str, float]

#: Any JSON document.
Json = Any

#: (table, column) -> the Python type the codegen uses for that JSON column.
JSON_SHAPES: dict[tuple[str, str], str] = {
    ("workflows", "definition"): "WorkflowGraph",
    ("workflow_snapshots", "snapshot_data"): "WorkflowGraph",
    ("models", "metrics"): "Metrics",
    ("experiment_runs", "metrics"): "Metrics",
}
