"""Shared by the workflow scripts: send output to the rule's log and turn user errors into one log line."""

import contextlib
import sys
import traceback

from clueflow.errors import ClueflowError


@contextlib.contextmanager
def logged(log_path, threads=None):
    """``threads``: the job's Snakemake threads, given to torch, so that parallel jobs do not oversubscribe the
    cores they were scheduled on (torch would otherwise start one thread per core in every job)."""
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield
        except ClueflowError as err:
            print(f"clueflow: {err}", file=log)
            sys.stderr.write(f"clueflow: {err}\n")
            sys.exit(1)
        except Exception:
            traceback.print_exc(file=log)
            raise


def keyed(keys, paths):
    """The rule's identities (from its params) matched to its input files, which the rule lists in the same order."""
    keys, paths = [tuple(k) if isinstance(k, list) else k for k in keys], list(paths)
    if len(keys) != len(paths):
        raise ValueError(f"{len(keys)} keys for {len(paths)} input files")
    return dict(zip(keys, paths))
