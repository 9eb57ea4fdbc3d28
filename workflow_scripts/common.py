"""Shared by the workflow scripts: send output to the rule's log and turn user errors into one log line."""

import contextlib
import sys
import traceback

from clueflow.errors import ClueflowError
from clueflow.retries import PREFIX, record_user_error, recorded_user_error


@contextlib.contextmanager
def logged(log_path, threads=None):
    """``threads``: the job's Snakemake threads, given to torch, so that parallel jobs do not oversubscribe the
    cores they were scheduled on (torch would otherwise start one thread per core in every job)."""
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    earlier = recorded_user_error(log_path)
    with open(log_path, "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        if earlier is not None:  # this job's previous attempt stopped on a user error: a retry cannot fix the input
            user_error(log, earlier)
        try:
            yield
        except ClueflowError as err:
            record_user_error(log_path, f"{PREFIX}{err}")
            user_error(log, f"{PREFIX}{err}")
        except Exception:
            traceback.print_exc(file=log)
            raise


def user_error(log, line):
    print(line, file=log)
    sys.stderr.write(f"{line}\n")
    sys.exit(1)


def device(snakemake):
    """``model.device`` from the workflow's config, never from a rule's params: where a job computes is not part
    of any artifact's identity, so changing it reruns nothing."""
    return snakemake.config["model"]["device"]


def keyed(keys, paths):
    """The rule's identities (from its params) matched to its input files, which the rule lists in the same order."""
    keys, paths = [tuple(k) if isinstance(k, list) else k for k in keys], list(paths)
    if len(keys) != len(paths):
        raise ValueError(f"{len(keys)} keys for {len(paths)} input files")
    return dict(zip(keys, paths))
