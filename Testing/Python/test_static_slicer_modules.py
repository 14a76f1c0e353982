"""Static checks of the Slicer modules: .ui widgets, parameter-node fields and module anatomy agree.

Nothing here needs Slicer: the module files are parsed (AST) and the .ui files read as XML. Each checker
returns a list of problems, and each is also shown to report a deliberately broken copy.
"""

from __future__ import annotations

import ast
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
