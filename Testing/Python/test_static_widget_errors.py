"""Static checks of the Slicer Widgets' error paths: the panel is restored in ``finally`` after any error,
work that ends after the module was left needs no parameter node, the application may have no layout
manager, and application-level connections are undone in ``cleanup``.

Nothing here needs Slicer: the module files are parsed (AST). Each checker is also shown to report the old
form of the code it guards.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest
from test_static_slicer_modules import MODULES, REPO, _paths

# ------------------------------------------------------------------------------ error paths of the Widgets
#: What brings a Widget's buttons and status lines up to date after an action.
RESTORERS = {
    "_updateState",
    "_updateTrainingButtons",
    "_updateModelButtons",
    "_updateDependencies",
    "refreshStore",
}


def _is_error_display(node: ast.AST) -> bool:
    """``with slicer.util.tryWithErrorDisplay(...)``: shows the error, then raises it again."""
    return isinstance(node, ast.With) and any(
        isinstance(item.context_expr, ast.Call)
        and ast.unparse(item.context_expr.func) == "slicer.util.tryWithErrorDisplay"
        for item in node.items
    )


def _restores(stmt: ast.stmt) -> str | None:
    """What ``stmt`` restores (``self.<restorer>()`` or ``self.ui.<widget>.<property> = ...``), or None."""
    for node in ast.walk(stmt):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if ast.unparse(node.func.value) == "self" and node.func.attr in RESTORERS:
                return f"self.{node.func.attr}()"
        if isinstance(node, ast.Assign):
            for target in node.targets:
                text = ast.unparse(target)
                if text.startswith("self.ui.") and text.count(".") >= 3:
                    return text
    return None


def _statement_lists(tree: ast.AST):
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
                yield stmts
        for handler in getattr(node, "handlers", []):
            yield handler.body


def check_restores_after_error_display(source: str) -> list[str]:
    """A statement that restores the panel right after a ``tryWithErrorDisplay`` block, in the same
    statement list, never runs when the block fails (the context manager raises again): it belongs in a
    ``finally``."""
    problems = []
    for stmts in _statement_lists(ast.parse(source)):
        for i, stmt in enumerate(stmts):
            if not _is_error_display(stmt):
                continue
            for later in stmts[i + 1 :]:
                restored = _restores(later)
                if restored:
                    problems.append(
                        f"line {later.lineno}: {restored} after the tryWithErrorDisplay block of line "
                        f"{stmt.lineno} is skipped when it fails; restore in a finally"
                    )
    return problems


#: (module, Widget method) -> what its ``finally`` must restore.
RESTORED_IN_FINALLY = {
    ("SemiSAMSegment", "_startWork"): "self._updateState()",
    ("SemiSAMSegment", "_onWorkerTick"): "self._updateState()",
    ("SemiSAMSegment", "_retrainAfterAccept"): "self.ui.statusLabel.text",
    ("SemiSAMSegment", "onInstallDependencies"): "self._updateDependencies()",
    ("SemiSAMTrain", "onRetrain"): "self._updateTrainingButtons()",
    ("SemiSAMTrain", "onPromote"): "self.refreshStore()",
    ("SemiSAMTrain", "onRollback"): "self.refreshStore()",
}


def _widget_methods(tree: ast.Module, module: str) -> dict[str, ast.FunctionDef]:
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    return {n.name: n for n in widget.body if isinstance(n, ast.FunctionDef)}


def finally_restores(method: ast.FunctionDef) -> set[str]:
    """What the ``finally`` clauses of ``method`` restore."""
    return {
        restored
        for node in ast.walk(method)
        if isinstance(node, ast.Try)
        for stmt in node.finalbody
        if (restored := _restores(stmt))
    }


@pytest.mark.parametrize("module", MODULES)
def test_no_widget_restores_the_panel_after_an_error_display_block(module):
    assert check_restores_after_error_display(_paths(module)[0].read_text()) == []


@pytest.mark.parametrize(("module", "method"), sorted(RESTORED_IN_FINALLY))
def test_actions_restore_their_buttons_and_status_in_finally(module, method):
    methods = _widget_methods(ast.parse(_paths(module)[0].read_text()), module)
    assert RESTORED_IN_FINALLY[module, method] in finally_restores(methods[method])


def test_restore_checkers_report_the_old_error_paths():
    """The forms the Widgets had: buttons refreshed after the error-display block, a status line set
    after it; and a restore moved out of the finally."""
    old_retrain = textwrap.dedent(
        """
        def onRetrain(self):
            with slicer.util.tryWithErrorDisplay("Retrain failed to start.", waitCursor=True):
                self.logic.startTraining()
            self._updateTrainingButtons()
        """
    )
    old_accept = textwrap.dedent(
        """
        def onAccept(self):
            with slicer.util.tryWithErrorDisplay("Automatic retraining failed to start."):
                job = self.logic.startRetrainingIfDue()
            notice = self.logic.validationNotice(p.storeFolder)
            self.ui.statusLabel.text = notice
        """
    )
    assert check_restores_after_error_display(old_retrain) == [
        "line 5: self._updateTrainingButtons() after the tryWithErrorDisplay block of line 3 is skipped when "
        "it fails; restore in a finally"
    ]
    assert any("self.ui.statusLabel.text after" in p for p in check_restores_after_error_display(old_accept))
    moved = textwrap.dedent(
        """
        def onPromote(self):
            try:
                with slicer.util.tryWithErrorDisplay("Promote failed."):
                    self.logic.promote()
            finally:
                pass
            self.refreshStore()
        """
    )
    method = ast.parse(moved).body[0]
    assert finally_restores(method) == set() and check_restores_after_error_display(moved) == []


# ------------------------------------------------------------------------------ work that ends after exit()
def _reads_parameter_node(node: ast.AST, names: set[str]) -> list[int]:
    """Lines where ``node`` reads a field of the parameter node (``p.X`` for ``p`` in ``names``, or
    ``self._parameterNode.X``)."""
    return [
        n.lineno
        for n in ast.walk(node)
        if isinstance(n, ast.Attribute)
        and (
            (isinstance(n.value, ast.Name) and n.value.id in names)
            or ast.unparse(n.value) == "self._parameterNode"
        )
    ]


def _returns_without_parameter_node(method: ast.FunctionDef) -> bool:
    """Whether ``method`` starts (after reading ``p = self._parameterNode``) with ``if p is None: return``
    (or ``if not p`` / ``self._parameterNode is None``)."""
    for stmt in method.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring
        if isinstance(stmt, ast.Assign) and ast.unparse(stmt.value) == "self._parameterNode":
            continue
        return (
            isinstance(stmt, ast.If)
            and ast.unparse(stmt.test) in ("p is None", "not p", "self._parameterNode is None")
            and isinstance(stmt.body[0], ast.Return)
        )
    return False


def check_finish_callbacks(source: str, module: str = "SemiSAMSegment") -> list[str]:
    """The ``finish`` callbacks of a Widget run when the work ends, possibly after the module was left
    (``exit()`` sets the parameter node to None): they must take what they write from the work's request
    and the settings captured when it started, and every Widget method they call must return early
    without a parameter node (unless it reads none)."""
    methods = _widget_methods(ast.parse(source), module)
    problems = []
    for name, method in methods.items():
        for finish in (n for n in ast.walk(method) if isinstance(n, ast.FunctionDef) and n.name == "finish"):
            for line in _reads_parameter_node(finish, {"p"}):
                problems.append(f"line {line}: finish() in {name} reads the parameter node")
            called = {
                n.func.attr
                for n in ast.walk(finish)
                if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and ast.unparse(n.func.value) == "self"
                and n.func.attr in methods
            }
            for callee in sorted(called):
                target = methods[callee]
                if _reads_parameter_node(target, {"p"}) and not _returns_without_parameter_node(target):
                    problems.append(f"{callee}, called by finish() in {name}, needs the parameter node")
    return problems


def test_finish_callbacks_do_not_need_the_parameter_node():
    source = _paths("SemiSAMSegment")[0].read_text()
    assert check_finish_callbacks(source) == []
    assert len([n for n in ast.walk(ast.parse(source)) if getattr(n, "name", "") == "finish"]) == 2


def test_finish_checker_reports_the_old_auto_segment_callback():
    source = _paths("SemiSAMSegment")[0].read_text()
    guard = "        if p is None:\n            return\n        k = self.logic.nextUncertainSlice("
    assert guard in source
    broken = source.replace(guard, "        k = self.logic.nextUncertainSlice(")
    broken = broken.replace("(request.volume_node, centres,", "(p.inputVolume, centres,")
    problems = check_finish_callbacks(broken)
    assert any("finish() in onAutoSegment reads the parameter node" in p for p in problems), problems
    assert "onNextUncertainSlice, called by finish() in onAutoSegment, needs the parameter node" in problems


# ------------------------------------------------------------------------------ the application without views
def check_layout_manager_calls(source: str) -> list[str]:
    """``slicer.app.layoutManager()`` is None under ``--no-main-window``: its result must be checked
    before use, never chained (``layoutManager().sliceWidget(...)``)."""
    return [
        f"line {n.lineno}: {ast.unparse(n)} uses layoutManager() without checking it for None"
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Call)
        and isinstance(n.value.func, ast.Attribute)
        and n.value.func.attr == "layoutManager"
    ]


def _widget_sources() -> list[Path]:
    return [_paths(m)[0] for m in MODULES] + sorted((REPO / "SemiSAMLib").glob("*.py"))


@pytest.mark.parametrize("path", _widget_sources(), ids=lambda p: p.name)
def test_layout_manager_may_be_none(path):
    assert check_layout_manager_calls(path.read_text()) == []


def test_layout_manager_checker_reports_a_chained_call():
    problems = check_layout_manager_calls('w = slicer.app.layoutManager().sliceWidget("Red")\n')
    assert problems == [
        "line 1: slicer.app.layoutManager().sliceWidget uses layoutManager() without checking it for None"
    ]


def check_application_connections(source: str, module: str) -> list[str]:
    """Every ``slicer.app.connect(signal, handler)`` of a Widget has its ``slicer.app.disconnect(signal,
    handler)`` in ``cleanup()``: Slicer calls cleanup() on the old widget at a module reload, and a
    connection left behind keeps the old widget answering (e.g. asking again at quit)."""
    methods = _widget_methods(ast.parse(source), module)

    def calls(node: ast.AST, name: str) -> set[tuple[str, str]]:
        return {
            (ast.unparse(n.args[0]), ast.unparse(n.args[1]))
            for n in ast.walk(node)
            if isinstance(n, ast.Call) and ast.unparse(n.func) == f"slicer.app.{name}" and len(n.args) == 2
        }

    connected = set().union(*(calls(m, "connect") for m in methods.values()))
    cleanup = methods.get("cleanup")
    disconnected = calls(cleanup, "disconnect") if cleanup is not None else set()
    return [
        f"slicer.app.connect({s}, {h}) is not undone in cleanup()"
        for s, h in sorted(connected - disconnected)
    ]


@pytest.mark.parametrize("module", MODULES)
def test_application_connections_are_undone_in_cleanup(module):
    assert check_application_connections(_paths(module)[0].read_text(), module) == []


def test_connection_checker_reports_the_old_quit_handler():
    source = _paths("SemiSAMTrain")[0].read_text()
    line = '        slicer.app.disconnect("aboutToQuit()", self.onApplicationQuit)\n'
    assert line in source
    assert check_application_connections(source.replace(line, ""), "SemiSAMTrain") == [
        "slicer.app.connect('aboutToQuit()', self.onApplicationQuit) is not undone in cleanup()"
    ]
