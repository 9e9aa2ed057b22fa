"""The rules engine: GoRules JDM graphs (what @gorules/jdm-editor edits) evaluated by zen-engine.

One `zen.ZenEngine` with a loader over parsed `ZenDecisionContent`s: zen calls the loader on
every evaluation, so handing it pre-parsed content (not a dict or JSON text) is what keeps an
evaluation at tens of microseconds. Every decision table gets an extra output column `rule`
holding the row's own `_id`, so a result says which rows fired without tracing.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import zen

from orderhub.domain.audit import AuditLine, AuditOrder, Decision, decide, line_context, order_context

RULE_FIELD = "rule"  # the injected output column
_RULE_COLUMN = "orderhub-rule"
_ROW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HIT_POLICIES = frozenset({"first", "collect"})
_TRACE = {"trace": True}
_NO_TRACE = {"trace": False}
_MAX_COMBINED = 64
_SPLIT = "split"  # the set evaluated per line, only for orders with more than one line


@dataclass(frozen=True, slots=True)
class Evaluation:
    result: Any
    trace: dict[str, Any] | None
    micros: float


class RuleError(Exception):
    """Invalid rule content or an expression that fails; `message` is meant for the person editing the rules."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def zen_message(error: BaseException) -> str:
    """zen's error text without the Rust backtrace it appends when RUST_BACKTRACE is set."""
    return str(error).split("\n\nStack backtrace", 1)[0].strip() or type(error).__name__


def default_content(name: str) -> dict[str, Any]:
    """The default JDM graph of one rule set, shipped with the package (adapters/rules/defaults/<name>.json)."""
    source = resources.files("orderhub.adapters.rules") / "defaults" / f"{name}.json"
    return orjson.loads(source.read_bytes())


def decision_tables(content: Mapping[str, Any]) -> list[dict[str, Any]]:
    nodes = content.get("nodes") if isinstance(content, Mapping) else None
    return [n for n in nodes or () if isinstance(n, dict) and n.get("type") == "decisionTableNode"]


def table_rows(content: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every decision-table row of a graph, in order (each has `_id` in valid content)."""
    rows: list[dict[str, Any]] = []
    for node in decision_tables(content):
        rows.extend(r for r in (node.get("content") or {}).get("rules") or () if isinstance(r, dict))
    return rows


def prepare(content: Mapping[str, Any], disabled: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of `content` without the disabled rows and with the `rule` column in every decision table."""
    try:
        graph = orjson.loads(orjson.dumps(content))
    except (TypeError, orjson.JSONEncodeError) as error:
        raise RuleError(f"rule content is not JSON: {error}") from None
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list) or not isinstance(graph.get("edges"), list):
        raise RuleError("rule content must be a JDM graph: an object with 'nodes' and 'edges' lists")
    off = frozenset(disabled)
    for node in decision_tables(graph):
        table = node.get("content")
        if not isinstance(table, dict) or not isinstance(table.get("outputs"), list) or not isinstance(table.get("rules"), list):
            raise RuleError(f"decision table {node.get('name') or node.get('id')!r} has no outputs/rules lists")
        table["outputs"] = [o for o in table["outputs"] if not (isinstance(o, dict) and o.get("id") == _RULE_COLUMN)]
        table["outputs"].append({"id": _RULE_COLUMN, "name": "Rule", "field": RULE_FIELD})
        rows = []
        for row in table["rules"]:
            if not isinstance(row, dict) or row.get("_id") in off:
                continue
            row[_RULE_COLUMN] = orjson.dumps(str(row.get("_id", ""))).decode()
            rows.append(row)
        table["rules"] = rows
    return graph


def _simple_table(graph: Mapping[str, Any]) -> dict[str, Any] | None:
    """The one decision table of an input -> table -> output graph, or None for anything richer."""
    nodes = graph["nodes"]
    tables = decision_tables(graph)
    if len(tables) != 1 or len(nodes) != 3 or len(graph["edges"]) != 2:
        return None
    kinds = sorted(str(n.get("type")) for n in nodes if isinstance(n, dict))
    table = tables[0]
    content = table["content"]
    if kinds != ["decisionTableNode", "inputNode", "outputNode"] or content.get("hitPolicy", "first") not in _HIT_POLICIES:
        return None
    if content.get("passThrough") or content.get("inputField") or content.get("outputPath"):
        return None
    if content.get("executionMode") not in (None, "single"):
        return None
    by_id = {n.get("id"): n.get("type") for n in nodes}
    path = sorted((by_id.get(e.get("sourceId")), by_id.get(e.get("targetId"))) for e in graph["edges"])
    if path != [("decisionTableNode", "outputNode"), ("inputNode", "decisionTableNode")]:
        return None
    return table


class RuleEngine:
    """Loaded rule sets by key ("holds@3#…"), evaluated one by one or all together for an order."""

    def __init__(self) -> None:
        self._contents: dict[str, zen.ZenDecisionContent] = {}
        self._tables: dict[str, dict[str, Any] | None] = {}  # key -> its single decision table, when it is that simple
        self._combined: dict[tuple[tuple[str, str], ...], tuple[str, tuple[str, ...]]] = {}
        self._generation = 0
        self._lock = threading.Lock()  # guards building and dropping combined graphs, not evaluation
        self._zen = zen.ZenEngine({"loader": self._contents.__getitem__})

    def load(self, key: str, content: dict[str, Any], disabled: Iterable[str] = ()) -> None:
        graph = prepare(content, disabled)
        try:
            parsed = zen.ZenDecisionContent(orjson.dumps(graph).decode())
        except (RuntimeError, ValueError) as error:
            raise RuleError(f"zen cannot read the graph: {zen_message(error)}") from None
        with self._lock:
            # zen itself caches nothing (the loader runs on every evaluation), but our combined graphs do.
            for signature, (combined_key, _) in list(self._combined.items()):
                if any(set_key == key for _, set_key in signature):
                    self._combined.pop(signature, None)
                    self._contents.pop(combined_key, None)
            self._tables[key] = _simple_table(graph)
            self._contents[key] = parsed

    def loaded(self, key: str) -> bool:
        return key in self._contents

    def evaluate(self, key: str, context: dict[str, Any], *, trace: bool = False) -> Evaluation:
        started = time.perf_counter_ns()
        try:
            response = self._zen.evaluate(key, context, _TRACE if trace else _NO_TRACE)
        except RuntimeError as error:
            if key not in self._contents:
                raise RuleError(f"rule set {key!r} is not loaded") from None
            raise RuleError(f"{key}: {zen_message(error)}") from None
        micros = (time.perf_counter_ns() - started) / 1000
        return Evaluation(response.get("result"), response.get("trace") if trace else None, micros)

    def decide(self, keys: Mapping[str, str], order: AuditOrder, *, trace: bool = False) -> tuple[Decision, dict[str, Any] | None]:
        """Evaluate every set on the order (the split set per line, for orders with >1 line) and decide.

        Without a trace, all simple sets run as one zen evaluation of a combined graph (each table
        under its set's name, the split table looping over the lines): one call instead of ~7.
        """
        context = order_context(order)
        lines = order.lines if len(order.lines) > 1 else ()
        if trace:
            return self._decide_traced(keys, order, context, lines)
        combined_key, separate = self._combined_for(keys)
        outputs: dict[str, Any] = {}
        line_outputs: dict[int, Any] = {}
        if combined_key:
            split_combined = _SPLIT in keys and _SPLIT not in separate
            payload = {"order": context, "lines": [line_context(order, line) for line in lines] if split_combined else []}
            try:
                outputs = self.evaluate(combined_key, payload).result or {}
            except RuleError:
                if self.loaded(combined_key):
                    raise
                return self.decide(keys, order)  # a set was reloaded meanwhile, dropping the combined graph: plan again
            if split_combined:
                line_outputs = dict(zip((line.line_no for line in lines), outputs.get(_SPLIT) or (), strict=False))
        for name in separate:
            if name == _SPLIT:
                line_outputs = {line.line_no: self.evaluate(keys[name], line_context(order, line)).result for line in lines}
            else:
                outputs[name] = self.evaluate(keys[name], context).result
        return decide(order, outputs, line_outputs), None

    def _decide_traced(
        self, keys: Mapping[str, str], order: AuditOrder, context: dict[str, Any], lines: tuple[AuditLine, ...]
    ) -> tuple[Decision, dict[str, Any]]:
        outputs: dict[str, Any] = {}
        line_outputs: dict[int, Any] = {}
        traces: dict[str, Any] = {}
        for name, key in keys.items():
            if name == _SPLIT:
                per_line = {}
                for line in lines:
                    evaluation = self.evaluate(key, line_context(order, line), trace=True)
                    line_outputs[line.line_no] = evaluation.result
                    per_line[str(line.line_no)] = evaluation.trace
                traces[name] = per_line
            else:
                evaluation = self.evaluate(key, context, trace=True)
                outputs[name] = evaluation.result
                traces[name] = evaluation.trace
        return decide(order, outputs, line_outputs), traces

    def _combined_for(self, keys: Mapping[str, str]) -> tuple[str | None, tuple[str, ...]]:
        """The combined graph's key for these sets (built on first use) and the sets that must run on their own."""
        signature = tuple(sorted(keys.items()))
        plan = self._combined.get(signature)
        if plan is None:
            with self._lock:
                plan = self._combined.get(signature) or self._build_combined(signature)
        return plan[0] or None, plan[1]

    def _build_combined(self, signature: tuple[tuple[str, str], ...]) -> tuple[str, tuple[str, ...]]:
        for name, key in signature:
            if key not in self._contents:
                raise RuleError(f"rule set {name!r} ({key}) is not loaded")
        simple = {name: self._tables[key] for name, key in signature if self._tables.get(key) is not None}
        separate = tuple(name for name, _ in signature if name not in simple)
        if len(self._combined) >= _MAX_COMBINED:  # dry runs of many drafts must not grow this without bound
            oldest = next(iter(self._combined))
            self._contents.pop(self._combined.pop(oldest)[0], None)
        combined_key = ""
        if simple:
            self._generation += 1
            combined_key = f"__combined#{self._generation}"
            self._contents[combined_key] = zen.ZenDecisionContent(orjson.dumps(_combine(simple)).decode())
        self._combined[signature] = (combined_key, separate)
        return combined_key, separate

    @staticmethod
    def validate(content: dict[str, Any]) -> list[str]:
        """[] when the content is a usable rule set, else the problems in words an editor can act on."""
        problems = _shape_problems(content)
        if problems:
            return problems
        # Evaluating once catches what a static look cannot (cycles, missing nodes, zen's own checks).
        order = sample_order()
        sample = {**order_context(order), **line_context(order, order.lines[1])}
        try:
            decision = zen.ZenEngine().create_decision(zen.ZenDecisionContent(orjson.dumps(prepare(content)).decode()))
            decision.validate()
            decision.evaluate(sample)
        except RuntimeError as error:
            return [f"zen rejects the graph: {zen_message(error)}"]
        except RuleError as error:
            return [error.message]
        return []


def _combine(tables: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One graph running every table side by side, each reading its input and writing under its set's name."""
    nodes: list[dict[str, Any]] = [
        {"id": "combined-input", "type": "inputNode", "name": "input", "position": {"x": 0, "y": 0}},
        {"id": "combined-output", "type": "outputNode", "name": "output", "position": {"x": 0, "y": 0}},
    ]
    edges: list[dict[str, Any]] = []
    for name, table in tables.items():
        content = dict(table["content"], outputPath=name, passThrough=False)
        content["inputField"] = "lines" if name == _SPLIT else "order"
        content["executionMode"] = "loop" if name == _SPLIT else "single"
        nodes.append({"id": f"set-{name}", "type": "decisionTableNode", "name": name, "position": {"x": 0, "y": 0}, "content": content})
        edges.append({"id": f"in-{name}", "sourceId": "combined-input", "targetId": f"set-{name}", "type": "edge"})
        edges.append({"id": f"out-{name}", "sourceId": f"set-{name}", "targetId": "combined-output", "type": "edge"})
    return {"nodes": nodes, "edges": edges}


def _shape_problems(content: Any) -> list[str]:
    if not isinstance(content, dict):
        return ["rule content must be a JSON object (a JDM graph)"]
    nodes, edges = content.get("nodes"), content.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        return ["a JDM graph needs a 'nodes' list and an 'edges' list"]
    problems: list[str] = []
    ids: set[str] = set()
    for number, node in enumerate(nodes, 1):
        if not isinstance(node, dict) or not isinstance(node.get("id"), str) or not isinstance(node.get("type"), str):
            problems.append(f"node #{number} needs a string 'id' and 'type'")
            continue
        if node["id"] in ids:
            problems.append(f"node id {node['id']!r} is used twice")
        ids.add(node["id"])
    types = {node.get("type") for node in nodes if isinstance(node, dict)}
    problems += [f"the graph has no {kind}" for kind in ("inputNode", "outputNode") if kind not in types]
    for number, edge in enumerate(edges, 1):
        if not isinstance(edge, dict) or edge.get("sourceId") not in ids or edge.get("targetId") not in ids:
            problems.append(f"edge #{number} does not join two nodes of the graph")
    tables = decision_tables(content)
    if not tables:
        problems.append("the graph has no decision table (decisionTableNode)")
    row_ids: set[str] = set()
    for node in tables:
        problems += _table_problems(node, row_ids)
    return problems


def _table_problems(node: dict[str, Any], row_ids: set[str]) -> list[str]:
    name = node.get("name") or node["id"]
    table = node.get("content")
    if not isinstance(table, dict):
        return [f"decision table {name!r} has no content"]
    problems = []
    if table.get("hitPolicy") not in _HIT_POLICIES:
        problems.append(f"decision table {name!r}: hitPolicy must be 'first' or 'collect', not {table.get('hitPolicy')!r}")
    inputs, outputs, rows = table.get("inputs"), table.get("outputs"), table.get("rules")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not isinstance(rows, list):
        return [*problems, f"decision table {name!r} needs 'inputs', 'outputs' and 'rules' lists"]
    columns: list[tuple[str, str, bool]] = []  # (column id, label, is an input with a field)
    for kind, column_list in (("input", inputs), ("output", outputs)):
        for column in column_list:
            if not isinstance(column, dict) or not isinstance(column.get("id"), str):
                problems.append(f"decision table {name!r}: every {kind} column needs a string 'id'")
                continue
            field = column.get("field")
            if kind == "output" and (not isinstance(field, str) or not field):
                problems.append(f"decision table {name!r}: output column {column.get('name') or column['id']!r} needs a 'field'")
            if kind == "output" and field == RULE_FIELD and column["id"] != _RULE_COLUMN:
                problems.append(f"decision table {name!r}: the output field {RULE_FIELD!r} is reserved (it names the row that fired)")
            columns.append((column["id"], f"{kind} {column.get('name') or column['id']!r}", kind == "input" and bool(field)))
    for number, row in enumerate(rows, 1):
        row_id = row.get("_id") if isinstance(row, dict) else None
        if not isinstance(row_id, str) or not _ROW_ID.fullmatch(row_id):
            problems.append(f"decision table {name!r}: row {number} needs an '_id' slug (letters, digits, '-', '_', '.')")
            continue
        if row_id in row_ids:
            problems.append(f"row id {row_id!r} is used twice")
        row_ids.add(row_id)
        for column_id, label, unary in columns:
            cell = row.get(column_id)
            if cell is None or (isinstance(cell, str) and not cell.strip()):
                continue  # an empty condition matches anything; an empty output is left out
            if not isinstance(cell, str):
                problems.append(f"row {row_id!r}, {label}: the cell must be an expression string, not {cell!r}")
                continue
            try:
                (zen.compile_unary_expression if unary else zen.compile_expression)(cell)
            except RuntimeError as error:
                problems.append(f"row {row_id!r}, {label}: {cell!r} is not a valid expression ({zen_message(error)})")
    return problems


def sample_order() -> AuditOrder:
    """A plain two-line order used to evaluate new content once (catches errors that only show when run)."""
    now = datetime(2025, 3, 18, 2, 12, tzinfo=UTC)
    lines = (
        AuditLine(1, "SKU-1001", "纯棉T恤 白色 L", 2, 5990, 11000, category="服装", cost=2400, weight_g=220),
        AuditLine(2, "SKU-1014", "保湿面霜 50g 单支", 1, 15900, 15000, category="美妆", cost=4770, weight_g=150, presale=True),
    )
    return AuditOrder(
        "sample",
        "douyin",
        "88880001",
        now,
        now,
        27880,
        1880,
        0,
        26000,
        "上海市",
        "上海市",
        "浦东新区",
        "测试路***",
        "V3",
        "",
        "",
        lines,
        ("douyin",),
        1,
    )
