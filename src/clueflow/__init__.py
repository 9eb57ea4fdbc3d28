"""clueflow: localization-guided LLM unlearning (CLUE and the methods it is compared with).

Stages, each one module (or sub-package) that imports only from stages below it:
``io`` → ``config`` → ``models`` → ``scoring`` → ``data`` → (circuits → logic → solve → masks → unlearn
→ evaluate → tables). ``cli`` and ``workflow_scripts/`` are thin adapters on top.
"""

__version__ = "0.1.0"
