import subprocess
import sys


def fresh_python(code: str) -> str:
    """What `code` prints in a new interpreter (one whose imports no other test has made)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_defect_model_never_imports_streamlit():
    """Every module of every layer, not a hand-picked few: a new module that pulls streamlit in fails here."""
    code = ("import importlib, pkgutil, sys, defect_model\n"
            "for module in pkgutil.walk_packages(defect_model.__path__, 'defect_model.'):\n"
            "    if not module.name.endswith('__main__'):\n"
            "        importlib.import_module(module.name)\n"
            "print(len(sys.modules) > 100, 'streamlit' in sys.modules)")
    assert fresh_python(code).split() == ["True", "False"]


def test_importing_the_package_does_not_load_torch():
    code = "import sys, defect_model; print('torch' in sys.modules)"
    assert fresh_python(code).strip() == "False"


def test_pages_import_only_ui():
    """Pages describe the page; everything they call lives in ui/ (which may use the engine)."""
    from pathlib import Path

    pages = Path(__file__).resolve().parents[1] / "pages"
    for page in pages.glob("*.py"):
        imports = [line for line in page.read_text().splitlines() if line.startswith(("from ", "import "))]
        outside = [line for line in imports if not line.startswith(("import streamlit", "from ui.", "from __future__"))]
        assert not outside, f"{page.name} imports past ui/: {outside}"


def test_what_every_layer_reads_loads_no_torch_and_nothing_above_it():
    """common/ sits below every layer (the settings schema, the backbone names, the model summary, where files live):
    reading a setting or a summary must not load torch or any other layer of the engine."""
    code = ("import sys, importlib, pkgutil, defect_model.common as common\n"
            "for module in pkgutil.iter_modules(common.__path__, 'defect_model.common.'):\n"
            "    importlib.import_module(module.name)\n"
            "engine = sorted({m.split('.')[1] for m in sys.modules if m.startswith('defect_model.')})\n"
            "print('torch' in sys.modules, ','.join(engine))")
    assert fresh_python(code).split() == ["False", "common"]
