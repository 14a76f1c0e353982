"""Static checks of the Slicer modules: .ui widgets, parameter-node fields and module anatomy agree.

Nothing here needs Slicer: the module files are parsed (AST) and the .ui files read as XML. Each checker
returns a list of problems, and each is also shown to report a deliberately broken copy.
"""

from __future__ import annotations

import ast
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("SemiSAMSegment", "SemiSAMTrain")


# ------------------------------------------------------------------------------ parsing
@dataclass
class UiWidget:
    name: str
    cls: str
    parameter: str | None  # the SlicerParameterName dynamic property, if any


def parse_ui(text: str) -> dict[str, UiWidget]:
    """Widgets of a Qt Designer .ui document by object name."""
    root = ET.fromstring(text)
    widgets = {}
    for w in root.iter("widget"):
        parameter = None
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
        widgets[w.get("name")] = UiWidget(w.get("name"), w.get("class"), parameter)
    return widgets


def ui_names_used(tree: ast.Module) -> set[str]:
    """``X`` of every ``self.ui.X`` in the module."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Fields (name -> annotation source) of the class decorated with ``@parameterNodeWrapper``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            return {
                s.target.id: ast.unparse(s.annotation)
                for s in node.body
                if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            }
    return {}


def _widget_fits(widget_class: str, annotation: str) -> bool:
    """Can Slicer's parameter-node GUI connectors bind this widget class to this annotation? (Mirrors
    slicer/parameterNodeWrapper/guiConnectors.py: they match the widget's exact class.)"""
    if annotation.startswith("vtkMRML"):
        return widget_class in ("qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView")
    if annotation.startswith("Annotated[float"):
        return widget_class in ("ctkSliderWidget", "QDoubleSpinBox")
    if annotation.startswith("Annotated[int"):
        return widget_class in ("QSpinBox", "QSlider")
    if annotation.startswith("Annotated[str") and "Choice(" in annotation:
        return widget_class == "QComboBox"
    if annotation == "str":
        return widget_class in ("QLineEdit", "QTextEdit")
    if annotation == "bool":
        return widget_class in ("QCheckBox", "QPushButton")
    if annotation[:1].isupper():  # an enum.Enum subclass (Generalist, Device, TrainingMethod)
        return widget_class == "QComboBox"
    return False


def check_module(source: str, ui_text: str) -> list[str]:
    """All static problems of one module file against its .ui (empty when consistent)."""
    tree = ast.parse(source)
    widgets = parse_ui(ui_text)
    fields = parameter_fields(tree)
    problems = [
        f"self.ui.{n} is used but the .ui has no widget named {n!r}"
        for n in sorted(ui_names_used(tree) - set(widgets))
    ]
    if not fields:
        problems.append("no @parameterNodeWrapper class with fields")
    bound = {}
    for w in widgets.values():
        if w.parameter is None:
            continue
        if w.parameter not in fields:
            problems.append(
                f"widget {w.name!r} has SlicerParameterName {w.parameter!r}, not a parameter node field"
            )
        elif not _widget_fits(w.cls, fields[w.parameter]):
            problems.append(
                f"widget {w.name!r} ({w.cls}) cannot represent field {w.parameter}: {fields[w.parameter]}"
            )
        bound[w.parameter] = w.name
    problems += [f"parameter node field {f!r} has no widget in the .ui" for f in fields if f not in bound]
    for node in ast.walk(tree):  # typed fields: no boolean or numeric values hidden in strings
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            if (
                node.value.value.lower() in ("true", "false")
                or node.value.value.replace(".", "", 1).isdigit()
            ):
                problems.append(f"field {ast.unparse(node.target)} stores {node.value.value!r} as a string")
    return problems


def _paths(module: str) -> tuple[Path, Path]:
    return REPO / module / f"{module}.py", REPO / module / "Resources" / "UI" / f"{module}.ui"


# ------------------------------------------------------------------------------ checks
@pytest.mark.parametrize("module", MODULES)
def test_module_matches_its_ui(module):
    py, ui = _paths(module)
    assert check_module(py.read_text(), ui.read_text()) == []


@pytest.mark.parametrize("module", MODULES)
def test_module_has_scripted_loadable_anatomy(module):
    tree = ast.parse(_paths(module)[0].read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in c.bases] for name, c in classes.items()}
    assert "ScriptedLoadableModule" in bases[module]
    assert "ScriptedLoadableModuleWidget" in bases[f"{module}Widget"]
    assert "VTKObservationMixin" in bases[f"{module}Widget"]
    assert "ScriptedLoadableModuleLogic" in bases[f"{module}Logic"]
    assert "ScriptedLoadableModuleTest" in bases[f"{module}Test"]
    assert parameter_fields(tree), f"{module}ParameterNode must be a @parameterNodeWrapper with fields"
    source = _paths(module)[0].read_text()
    assert f'loadUI(self.resourcePath("UI/{module}.ui"))' in source
    assert "childWidgetVariables" in source and "connectGui(self.ui)" in source
    assert 'self.parent.categories = ["Segmentation"]' in source
    # The parameter node wrapper needs real annotation objects.
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)


@pytest.mark.parametrize("module", MODULES)
def test_logic_and_module_import_no_gui_at_top_level(module):
    """qt/ctk/slicer.app are only imported inside the guarded block, so Logic imports headless."""
    tree = ast.parse(_paths(module)[0].read_text())
    top_imports = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_imports += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            top_imports.append(node.module)
    assert not {"qt", "ctk", "slicer.ScriptedLoadableModule"} & set(top_imports)
    logic = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Logic")
    used = {ast.unparse(n) for n in ast.walk(logic) if isinstance(n, ast.Attribute | ast.Name)}
    assert not {"qt", "ctk", "slicer.app", "slicer.mrmlScene", "slicer.util"} & used


# ------------------------------------------------------------------------------ the checker itself can fail
def test_checker_reports_unknown_ui_name():
    py, ui = _paths("SemiSAMSegment")
    broken = py.read_text().replace("self.ui.loadMaskButton.connect", "self.ui.loadMaskButtonTypo.connect")
    assert any("loadMaskButtonTypo" in p for p in check_module(broken, ui.read_text()))


def test_checker_reports_unknown_parameter_name():
    py, ui = _paths("SemiSAMTrain")
    broken = ui.read_text().replace("<string>iterations</string>", "<string>iteration</string>")
    problems = check_module(py.read_text(), broken)
    assert any("'iteration', not a parameter node field" in p for p in problems)
    assert any("field 'iterations' has no widget" in p for p in problems)


def test_checker_reports_widget_that_cannot_bind():
    py, ui = _paths("SemiSAMTrain")
    broken = ui.read_text().replace(
        'class="QSpinBox" name="iterationsSpinBox"', 'class="QLineEdit" name="iterationsSpinBox"'
    )
    assert any("cannot represent field iterations" in p for p in check_module(py.read_text(), broken))


def test_checker_reports_boolean_string_field():
    py, ui = _paths("SemiSAMSegment")
    broken = py.read_text().replace(
        '    device: Device = DEFAULTS["device"]\n',
        '    device: Device = DEFAULTS["device"]\n    useGpu: str = "true"\n',
    )
    assert any("useGpu stores 'true' as a string" in p for p in check_module(broken, ui.read_text()))


@pytest.mark.parametrize("module", MODULES)
def test_remembered_preferences_are_parameter_fields_with_defaults(module):
    tree = ast.parse(_paths(module)[0].read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    (prefs,) = [
        ast.literal_eval(s.value)
        for s in widget.body
        if isinstance(s, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "PREFERENCES" for t in s.targets)
    ]
    import sys

    sys.path.insert(0, str(REPO))
    from SemiSAMLib.defaults import DEFAULTS

    assert set(prefs) <= set(parameter_fields(tree)) and set(prefs) <= set(DEFAULTS)


@pytest.mark.parametrize(
    ("cmake", "pattern", "folder"),
    [
        (
            "SemiSAMSegment/CMakeLists.txt",
            r"\$\{MODULE_NAME\}Lib/(\w+\.py)",
            "SemiSAMSegment/SemiSAMSegmentLib",
        ),
        ("CMakeLists.txt", r"SemiSAMLib/(\w+\.py)", "SemiSAMLib"),
    ],
)
def test_every_lib_script_is_installed_by_cmake(cmake, pattern, folder):
    """A helper file missing from the CMake script lists is absent from the built extension: the module
    would fail to import in Slicer while every test here passes."""
    import re

    listed = set(re.findall(pattern, (REPO / cmake).read_text()))
    present = {p.name for p in (REPO / folder).glob("*.py")}
    assert present - listed == set(), f"add to {cmake}: {sorted(present - listed)}"
    assert listed - present == set()


# Provided by Slicer's ScriptedLoadableModuleWidget / VTKObservationMixin or set in every Widget's setup.
_FRAMEWORK = {"layout", "parent", "ui", "logic", "addObserver", "removeObserver"}
_FRAMEWORK |= {"_parameterNode", "_parameterNodeGuiTag"}


def _mixin_needs() -> set[str]:
    """``self.X`` that SemiSAMLib.gui.ModuleWidgetMixin uses but neither defines nor gets from Slicer."""
    tree = ast.parse((REPO / "SemiSAMLib" / "gui.py").read_text())
    mixin = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ModuleWidgetMixin")
    defined = {n.name for n in mixin.body if isinstance(n, ast.FunctionDef)}
    defined |= {t.id for n in mixin.body if isinstance(n, ast.AnnAssign | ast.Assign) for t in _targets(n)}
    used = {
        n.attr
        for n in ast.walk(mixin)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
    }
    return used - defined - _FRAMEWORK


def _targets(node) -> list:
    return [node.target] if isinstance(node, ast.AnnAssign) else node.targets


@pytest.mark.parametrize("module", MODULES)
def test_widget_provides_what_the_shared_mixin_calls(module):
    """Both Widgets take set-up, enter/exit, scene close and preferences from ModuleWidgetMixin (listed
    first, so its enter/exit win) and define what it calls back; a missing one would only fail inside
    Slicer, when the module panel opens or the scene closes."""
    needs = _mixin_needs()
    assert {"initializeParameterNode", "onSceneStartClose", "_updateState", "setParameterNode"} <= needs
    tree = ast.parse(_paths(module)[0].read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    assert ast.unparse(widget.bases[0]) == "ModuleWidgetMixin"
    methods = {n.name for n in widget.body if isinstance(n, ast.FunctionDef)}
    assert needs - methods == set(), f"{module}Widget must define {sorted(needs - methods)}"
    assert "_setupPanel" in ast.unparse(next(n for n in widget.body if getattr(n, "name", "") == "setup"))


# ------------------------------------------------------------------------------ Qt signals the Widgets connect
_BUTTON = {"clicked()", "clicked(bool)", "pressed()", "released()", "toggled(bool)"}
_VIEW = {"clicked(QModelIndex)", "doubleClicked(QModelIndex)", "activated(QModelIndex)"}
#: Signals of the widget classes the .ui files use (their own and inherited ones, as Qt / CTK / Slicer
#: declare them, in the normalised form PythonQt's ``connect`` takes).
SIGNALS = {
    "QPushButton": _BUTTON,
    "QToolButton": _BUTTON | {"triggered(QAction*)"},
    "QCheckBox": _BUTTON | {"stateChanged(int)"},
    "QTableWidget": _VIEW
    | {
        "itemSelectionChanged()",
        "cellClicked(int,int)",
        "cellDoubleClicked(int,int)",
        "itemChanged(QTableWidgetItem*)",
    },
    "QComboBox": {"currentIndexChanged(int)", "currentTextChanged(QString)", "activated(int)"},
    "QLineEdit": {"textChanged(QString)", "textEdited(QString)", "editingFinished()", "returnPressed()"},
    "QSpinBox": {"valueChanged(int)", "editingFinished()"},
    "ctkSliderWidget": {"valueChanged(double)", "valueIsChanging(double)"},
    "qMRMLNodeComboBox": {
        "currentNodeChanged(vtkMRMLNode*)",
        "currentNodeChanged(bool)",
        "currentNodeIDChanged(QString)",
        "nodeAdded(vtkMRMLNode*)",
        "nodeActivated(vtkMRMLNode*)",
    },
    "qSlicerMarkupsPlaceWidget": {"activeMarkupsFiducialPlaceModeChanged(bool)"},
}


def ui_connections(tree: ast.Module) -> list[tuple[str, str, int]]:
    """``(widget name, signal, line)`` of every ``self.ui.X.connect("signal", ...)`` in the module."""
    out = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "connect"
            and isinstance(node.func.value, ast.Attribute)
            and ast.unparse(node.func.value.value) == "self.ui"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            out.append((node.func.value.attr, node.args[0].value, node.lineno))
    return out


def check_signals(source: str, ui_text: str) -> list[str]:
    """Every signal a Widget connects on a ``self.ui`` widget exists for that widget's class."""
    widgets = parse_ui(ui_text)
    problems = []
    for name, signal, line in ui_connections(ast.parse(source)):
        widget = widgets.get(name)
        if widget is None:
            problems.append(f"line {line}: self.ui.{name} is not in the .ui")
        elif widget.cls not in SIGNALS:
            problems.append(f"line {line}: {name} is a {widget.cls}; add its signals to SIGNALS")
        elif signal.replace(" ", "") not in SIGNALS[widget.cls]:
            problems.append(f"line {line}: {name} ({widget.cls}) has no signal {signal!r}")
    return problems


@pytest.mark.parametrize("module", MODULES)
def test_every_connected_signal_exists_in_the_ui(module):
    py, ui = _paths(module)
    connections = ui_connections(ast.parse(py.read_text()))
    assert len(connections) >= 8, connections  # the parser finds the Widget's connections
    assert check_signals(py.read_text(), ui.read_text()) == []


def test_signal_checker_reports_a_wrong_signal_and_a_wrong_class():
    py, ui = _paths("SemiSAMSegment")
    broken = py.read_text().replace(
        'cancelButton.connect("clicked(bool)"', 'cancelButton.connect("clickd(bool)"'
    )
    assert any(
        "cancelButton (QPushButton) has no signal 'clickd(bool)'" in p
        for p in check_signals(broken, ui.read_text())
    )
    py, ui = _paths("SemiSAMTrain")
    broken_ui = ui.read_text().replace(
        'class="QTableWidget" name="modelsTableWidget"', 'class="QPushButton" name="modelsTableWidget"'
    )
    problems = check_signals(py.read_text(), broken_ui)
    assert any(
        "modelsTableWidget (QPushButton) has no signal 'itemSelectionChanged()'" in p for p in problems
    )


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
