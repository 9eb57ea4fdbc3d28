"""Build one circuit artifact from a filtered data set, and summarize circuit files.

Artifact ``results/circuits/{model}/{set}.parquet``: one row per edge of the model's graph

=================  =======  ==================================================================================
column             type     meaning
=================  =======  ==================================================================================
src                string   writer: ``input``, ``a{l}.h{h}`` (attention head), ``m{l}`` (MLP)
dst                string   receiver: ``a{l}.h{h}.q``, ``a{l}.kv{g}.k``, ``a{l}.kv{g}.v``, ``m{l}``, ``logits``
score_noising      float32  noising attribution (mean per example)
score_denoising    float32  denoising attribution (mean per example)
in_noising         bool     edge is in the noising circuit
in_denoising       bool     edge is in the denoising circuit
gate               string   ``AND`` / ``OR`` / ``ADDER`` for edges in either circuit, else null
=================  =======  ==================================================================================

Parquet metadata key ``clueflow`` and the JSON summary beside it hold: method, edge fraction, sizes,
sparsity and faithfulness of both circuits, gate counts, number of examples, seed, cost.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..anatomy import Shape, parse_receiver
from ..config import default
from ..data.schema import read_set, set_name
from ..devices import model_device
from ..errors import ClueflowError
from ..io import read_json, read_parquet_metadata, read_table, write_json, write_parquet
from ..models import load_model, load_tokenizer
from ..scoring import encode_continuation, encode_prompt, pad_id, padded
from .attribution import METHODS, Attribution
from .graph import Graph, build_graph
from .runtime import Batch
from .select import (GATES, circuit_of_size, edge_mask, faithfulness, gate_labels, node_edges, prune,
                     size_within_nodes, sparsity)


def truncate_left(ids: list[int], max_length: int, bos: int | None) -> list[int]:
    """The last ``max_length`` tokens of a prompt (the answer position, its last token, stays), keeping a
    leading ``bos``."""
    if len(ids) <= max_length:
        return ids
    head = ids[:1] if bos is not None and ids[0] == bos else []
    return head + ids[len(ids) - (max_length - len(head)):]


def make_batches(df: pd.DataFrame, tok, batch_size: int, *, max_length: int = default("circuits.max_length"),
                 batch_tokens: int = default("circuits.batch_tokens"),
                 device: torch.device | str = "cpu") -> list[Batch]:
    """Right-padded clean/corrupted batches on ``device``; the rows must be token-aligned (checked when the set
    was read), so truncating both prompts to ``max_length`` from the left keeps them aligned. Consecutive rows
    form a batch while it has at most ``batch_size`` rows and ``batch_tokens`` padded tokens (rows × longest
    prompt); a row longer than that alone is a batch of its own."""
    pad = pad_id(tok)
    prompts = {col: [truncate_left(encode_prompt(tok, p), max_length, tok.bos_token_id) for p in df[col]]
               for col in ("prompt", "corrupted_prompt")}
    spans, start, width = [], 0, 0
    for i, ids in enumerate(prompts["prompt"]):
        width = max(width, len(ids))
        if i > start and (i + 1 - start > batch_size or (i + 1 - start) * width > batch_tokens):
            spans.append((start, i))
            start, width = i, len(ids)
    spans += [(start, len(df))] if len(df) else []
    batches = []
    for start, stop in spans:
        clean, corr = prompts["prompt"][start:stop], prompts["corrupted_prompt"][start:stop]
        rows = df.iloc[start:stop]
        (ids, mask), cids = padded(clean, pad), padded(corr, pad)[0]  # token-aligned pairs: one mask
        first = lambda col: torch.tensor([encode_continuation(tok, t)[0] for t in rows[col]])  # noqa: E731
        batches.append(Batch(ids, cids, mask, torch.tensor([len(a) - 1 for a in clean]), first("answer"),
                             first("corrupted_answer")).to(device))
    return batches


def discover(model, tok, df: pd.DataFrame, *, method: str = "eap_dual", edge_fraction: float = 0.05,
             batch_size: int = 8, max_length: int = default("circuits.max_length"),
             batch_tokens: int = default("circuits.batch_tokens"), options: dict[str, Any] | None = None,
             seed: int = 0, mlp_blocks: int = default("circuits.mlp_blocks"),
             node_fraction: float = default("circuits.node_fraction"),
             selection: str = default("circuits.selection")) -> tuple[pd.DataFrame, dict[str, Any], float]:
    """Scores, both circuits (equal pruned size), gate labels and faithfulness for the rows of ``df``;
    returns the edge table, the summary and the wall seconds."""
    start = time.perf_counter()
    graph: Graph = build_graph(model, mlp_blocks=mlp_blocks)
    batches = make_batches(df, tok, batch_size, max_length=max_length, batch_tokens=batch_tokens,
                           device=model_device(model))
    options = dict(options or {})
    attr = METHODS.get(method, field="circuits.method")(model, graph, batches, edge_fraction=edge_fraction,
                                                        seed=seed, **options)
    edges, summary = select_circuits(model, graph, batches, attr, edge_fraction=edge_fraction,
                                     node_fraction=node_fraction, selection=selection)
    summary.update(method=method, options=options)
    return edges, summary, round(time.perf_counter() - start, 2)


def select_circuits(model, graph: Graph, batches: list[Batch], attr: Attribution, *, edge_fraction: float,
                    node_fraction: float = default("circuits.node_fraction"),
                    selection: str = default("circuits.selection")) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Both circuits of ``edge_fraction`` × edges from the scores in ``attr`` — fewer where either would touch
    more than ``node_fraction`` of the nodes, so that both keep the same size — gate labels and faithfulness on
    ``batches``: the edge table and the summary. Under a node budget, ``selection`` ``edges`` takes the top edges
    while they fit it; ``nodes`` takes each direction's top nodes by summed |score| and the top edges among them."""
    size = max(1, round(edge_fraction * graph.n_edges))
    budget: dict[str, Any] = {}
    scores = {"noising": attr.noising, "denoising": attr.denoising}
    allowed = dict.fromkeys(scores)  # None: every edge
    if node_fraction < 1:
        max_nodes = int(node_fraction * (len(graph.writers) - 1))
        if selection == "nodes":  # each direction's top nodes, then its top edges among them
            allowed = {d: node_edges(graph, s, max_nodes) for d, s in scores.items()}
            caps = [int(prune(graph, a).sum()) for a in allowed.values()]
        else:
            caps = [size_within_nodes(graph, s, max_nodes) for s in scores.values()]
        size = max(1, min(size, *caps))
        budget = dict(node_fraction=node_fraction, max_nodes=max_nodes, selection=selection)
    circuits = {d: circuit_of_size(graph, s, size, allowed[d]) for d, s in scores.items()}
    labels = gate_labels(circuits["noising"], circuits["denoising"])
    summary: dict[str, Any] = dict(edge_fraction=edge_fraction, **budget, n_examples=attr.n_examples,
                                   n_edges_total=graph.n_edges, n_writers=len(graph.writers),
                                   n_receivers=len(graph.receivers), architecture=graph.model_type,
                                   **graph.shape.meta(),
                                   attribution_forward_equivalents=attr.forward_equivalents)
    for direction, keep in circuits.items():
        summary[direction] = {**sparsity(graph, keep),
                              "faithfulness": faithfulness(model, graph, batches, keep, direction)}
    summary["gates"] = {g: int((labels == i).sum()) for i, g in enumerate(GATES)}

    mask = edge_mask(graph)
    src_idx, dst_idx = mask.nonzero(as_tuple=True)
    writers, receivers = graph.writers, graph.receivers
    gate_names = [None, *GATES]  # index shift: -1 → None
    edges = pd.DataFrame({
        "src": [writers[i] for i in src_idx.tolist()],
        "dst": [receivers[i] for i in dst_idx.tolist()],
        # scores and circuits may live on the model's device; the table is built on the CPU
        "score_noising": attr.noising.cpu()[mask].numpy().astype("float32"),
        "score_denoising": attr.denoising.cpu()[mask].numpy().astype("float32"),
        "in_noising": circuits["noising"].cpu()[mask].numpy(),
        "in_denoising": circuits["denoising"].cpu()[mask].numpy(),
        "gate": [gate_names[i + 1] for i in labels[mask].tolist()],
    })
    return edges, summary


def _circuit_rows(data_path: str | Path, tok, *, split: str, n_examples: int, seed: int) -> pd.DataFrame:
    """The examples a circuit of ``data_path`` is found on: ``n_examples`` of ``split``, drawn by ``seed``."""
    df = read_set(data_path, tokenizer=tok)
    rows = df[df["split"] == split]
    if rows.empty:
        raise ClueflowError(f"no rows in split {split!r}", file=data_path, field="split")
    if len(rows) > n_examples:
        pick = sorted(random.Random(f"{seed}:circuit").sample(range(len(rows)), n_examples))
        rows = rows.iloc[pick]
    return rows.reset_index(drop=True)


def _write_circuit(edges: pd.DataFrame, summary: dict[str, Any], seconds: float, out_parquet: str | Path,
                   out_json: str | Path) -> dict[str, Any]:
    write_parquet(out_parquet, edges, metadata=summary)  # no timings here: the artifact is reproducible
    summary["seconds"] = seconds
    write_json(out_json, summary)
    return summary


def run_circuit(data_path: str | Path, model_dir: str | Path, out_parquet: str | Path, out_json: str | Path, *,
                method: str = default("circuits.method"), edge_fraction: float = default("circuits.edge_fraction"),
                n_examples: int = default("circuits.n_examples"), batch_size: int = default("circuits.batch_size"),
                max_length: int = default("circuits.max_length"), batch_tokens: int = default("circuits.batch_tokens"),
                options: dict[str, Any] | None = None, seed: int = 0, split: str = "circuit",
                mlp_blocks: int = default("circuits.mlp_blocks"),
                node_fraction: float = default("circuits.node_fraction"),
                selection: str = default("circuits.selection"), dtype: str = default("model.dtype"),
                device: str = default("model.device"), trust_remote_code: bool = False) -> dict[str, Any]:
    """File-level step: filtered data set + model → circuit parquet + JSON summary (computed on ``device``)."""
    METHODS.get(method, field="circuits.method")  # before any model is loaded
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    rows = _circuit_rows(data_path, tok, split=split, n_examples=n_examples, seed=seed)
    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    edges, summary, seconds = discover(model, tok, rows, method=method, edge_fraction=edge_fraction,
                                       batch_size=batch_size, max_length=max_length, batch_tokens=batch_tokens,
                                       options=options, seed=seed, mlp_blocks=mlp_blocks,
                                       node_fraction=node_fraction, selection=selection)
    summary.update(set=set_name(data_path), seed=seed, split=split,
                   example_ids=rows["id"].tolist())
    return _write_circuit(edges, summary, seconds, out_parquet, out_json)


def resize_circuit(circuit_path: str | Path, data_path: str | Path, model_dir: str | Path,
                   out_parquet: str | Path, out_json: str | Path, *, edge_fraction: float,
                   batch_size: int = default("circuits.batch_size"), max_length: int = default("circuits.max_length"),
                   batch_tokens: int = default("circuits.batch_tokens"), dtype: str = default("model.dtype"),
                   device: str = default("model.device"), trust_remote_code: bool = False) -> dict[str, Any]:
    """File-level step: the circuits of an existing circuit file re-selected at ``edge_fraction`` from its
    scores (no new attribution), with gate labels and faithfulness measured on the same examples."""
    started = time.perf_counter()
    meta = read_parquet_metadata(circuit_path)
    missing = {"example_ids", "n_examples", "split"} - set(meta)
    if missing:
        raise ClueflowError(f"circuit metadata lacks {sorted(missing)} (rebuild the circuit)", file=circuit_path,
                            field="metadata")
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    df = read_set(data_path, tokenizer=tok).set_index("id")
    unknown = [i for i in meta["example_ids"] if i not in df.index]
    if unknown:
        raise ClueflowError(f"circuit examples {unknown[:3]} are not in the data set", file=data_path, field="id")
    rows = df.loc[meta["example_ids"]].reset_index()
    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    graph = build_graph(model, mlp_blocks=Shape.from_meta(meta).mlp_blocks)
    table = read_table(circuit_path, what="circuit")
    mask = edge_mask(graph)
    src_idx, dst_idx = mask.nonzero(as_tuple=True)
    writers, receivers = graph.writers, graph.receivers  # properties: build each list once
    if (len(table) != graph.n_edges or table["src"].tolist() != [writers[i] for i in src_idx.tolist()]
            or table["dst"].tolist() != [receivers[i] for i in dst_idx.tolist()]):
        raise ClueflowError("the edges are not the model's graph (another model?)", file=circuit_path, field="src")
    scores = {}
    for direction in ("noising", "denoising"):
        full = torch.zeros(mask.shape)
        full[mask] = torch.tensor(table[f"score_{direction}"].to_numpy(dtype="float32"))
        scores[direction] = full
    attr = Attribution(scores["noising"], scores["denoising"], meta["n_examples"], 0)
    batches = make_batches(rows, tok, batch_size, max_length=max_length, batch_tokens=batch_tokens,
                           device=model_device(model))
    edges, summary = select_circuits(model, graph, batches, attr, edge_fraction=edge_fraction,
                                     node_fraction=meta.get("node_fraction", 1.0),  # the original's node budget
                                     selection=meta.get("selection", "edges"))
    summary = {**{k: v for k, v in meta.items() if k not in summary}, **summary, "resized_from": str(circuit_path)}
    return _write_circuit(edges, summary, round(time.perf_counter() - started, 2), out_parquet, out_json)


def summarize(path: str | Path) -> pd.DataFrame:
    """Counts per layer: circuit edges by direction and gate, and nodes touched."""
    edges = read_table(path, what="circuit")
    missing = {"src", "dst", "in_noising", "in_denoising", "gate"} - set(edges.columns)
    if missing:
        raise ClueflowError(f"missing column(s) {sorted(missing)}", file=path, field="columns")
    inc = edges[edges["in_noising"] | edges["in_denoising"]].copy()
    inc["layer"] = [str(layer) if layer is not None else "logits" for _, layer, _ in map(parse_receiver, inc["dst"])]
    table = inc.groupby("layer").agg(noising=("in_noising", "sum"), denoising=("in_denoising", "sum"),
                                     AND=("gate", lambda g: int((g == "AND").sum())),
                                     OR=("gate", lambda g: int((g == "OR").sum())),
                                     ADDER=("gate", lambda g: int((g == "ADDER").sum())),
                                     receivers=("dst", "nunique"), sources=("src", "nunique")).reset_index()
    order = table["layer"].map(lambda x: 10**9 if x == "logits" else int(x))
    return table.iloc[order.argsort()].reset_index(drop=True)


def circuit_table(summary_paths) -> pd.DataFrame:
    """One row per circuit summary JSON: sizes, sparsity, gate counts, faithfulness of both directions."""
    rows = []
    for path in summary_paths:
        s = read_json(path)
        row = dict(set=s["set"], method=s["method"], examples=s["n_examples"], graph_edges=s["n_edges_total"])
        for d, short in (("noising", "ns"), ("denoising", "dn")):
            c = s[d]
            row.update({f"{short}_edges": c["edges"], f"{short}_nodes": c["nodes"],
                        f"{short}_faithfulness": c["faithfulness"]["normalized"], f"{short}_kl": c["faithfulness"]["kl"]})
        row.update({g: s["gates"][g] for g in GATES})
        row["seconds"] = s["seconds"]
        rows.append(row)
    return pd.DataFrame(rows)
