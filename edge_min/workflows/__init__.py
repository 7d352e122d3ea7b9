"""Workflows: the definition model and its validation, references and ``when`` conditions."""

from __future__ import annotations

from edge_min.workflows.conditions import Condition, compile_condition
from edge_min.workflows.definition import (
    StepDefinition,
    Trigger,
    WorkflowDefinition,
    parse_definition,
)
from edge_min.workflows.expressions import Template, compile_template
from edge_min.workflows.references import Reference

__all__ = [
    "Condition",
    "Reference",
    "StepDefinition",
    "Template",
    "Trigger",
    "WorkflowDefinition",
    "compile_condition",
    "compile_template",
    "parse_definition",
]
