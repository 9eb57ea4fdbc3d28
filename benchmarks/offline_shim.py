"""Lets ``clueflow`` import under a Python without python-sat (the GPU check's target machines).

``clueflow.masks`` imports ``clueflow.solve``, which imports python-sat at module level; the GPU check never
solves, so where python-sat is missing, empty stand-in modules let that import through (any use of them fails
loudly). Imported by ``gpu_check.py`` and loaded into pytest with ``-p offline_shim``.
"""

import importlib.util
import sys
import types

if importlib.util.find_spec("pysat") is None:
    for name in ("pysat", "pysat.examples", "pysat.examples.rc2", "pysat.formula", "pysat.solvers"):
        sys.modules[name] = types.ModuleType(name)
    for module, attr in (("pysat.examples.rc2", "RC2"), ("pysat.formula", "WCNF"), ("pysat.solvers", "Cadical195")):
        setattr(sys.modules[module], attr, None)
