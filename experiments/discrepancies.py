"""`discrepancies` and `discrepancies_camvid`: each paper-vs-released-code switch as a paired study.

The reference cell is ProtoSeg exactly as the released code trains it (docs/method.md#paper-vs-
released-code): projection MLP, embeddings normalised over the image width, LayerNorm on the
class scores, prototypes updated from a hard Gumbel draw, PPC temperature 1.0, PPD weight
0.001, Sinkhorn solved per process, and (Cityscapes) its class-weighted cross-entropy. Every
other cell changes one switch to the paper's (or the intended) behaviour and nothing else, so
its paired difference to the reference over seeds says what that switch is worth. Verdicts are
against zero (the paper reports no such numbers).

- `discrepancies`: the released recipe itself, HRNetV2-W48 on Cityscapes (80K iterations, 4
  GPUs; `cityscapes_hrnet_80k`).
- `discrepancies_camvid`: its CPU twin on CamVid (the `camvid` grid's MiT-B0 prototype cell,
  with its momentum scaled to the 800-step schedule, experiments/scaling.py). The Sinkhorn-scope
  switch is left out there (on one process both scopes solve the same problem), and so are the
  Cityscapes class weights.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from benchmark.config import Cell, HeadSpec
from benchmark.overrides import apply_overrides
from benchmark.stats import planned_seeds
from experiments import Grid
from experiments.camvid import camvid
from experiments.table2 import table2

RELEASED = dict(name="prototype", projection="mlp", proj_norm_axis="width", score_norm="layernorm",
                update_assign="gumbel", ppc_tau=1.0, ppc_weight=0.01, ppd_weight=0.001,
                sinkhorn_scope="process")
# switch name -> (row label, the one setting (--set key, value) that differs from the reference)
SWITCHES: dict[str, tuple[str, tuple[str, Any]]] = {
    "ppc_tau": ("PPC temperature 1.0 -> 0.1", ("model.head.ppc_tau", 0.1)),
    "ppd_weight": ("PPD weight 0.001 -> 0.01", ("model.head.ppd_weight", 0.01)),
    "update_assign": ("prototype update: Gumbel draw -> argmax",
                      ("model.head.update_assign", "argmax")),
    "projection": ("projection MLP -> none", ("model.head.projection", "none")),
    "score_norm": ("score LayerNorm -> none", ("model.head.score_norm", "none")),
    "proj_norm_axis": ("embedding norm over width -> channels",
                       ("model.head.proj_norm_axis", "channel")),
    "sinkhorn_scope": ("Sinkhorn per process -> all processes",
                       ("model.head.sinkhorn_scope", "all")),
    "ce_weights": ("class-weighted CE -> unweighted", ("train.ce_weights", "none")),
}
CPU_ONLY_OUT = ("sinkhorn_scope", "ce_weights")  # one process; CamVid has no such weights


def switch_cells(grid: str, template: Cell, switches: dict[str, tuple[str, tuple[str, Any]]],
                 **head_extra: Any) -> tuple[Cell, ...]:
    """The released reference and one cell per switch, all from `template`: each switched
    cell differs from the reference in its one setting."""
    head = HeadSpec(**{**RELEASED, **head_extra})
    reference = replace(template, grid=grid, row="Released code", tag="baseline",
                        pair="released", paper_miou=None, paper_params_m=None,
                        model=replace(template.model, head=head))
    return (reference, *(replace(apply_overrides(reference, [f"{key}={value}"]), row=row,
                                 tag="switch") for row, (key, value) in switches.values()))


def discrepancies() -> Grid:
    hrnet = next(c for c in table2().cells if c.pair == "hrnet" and c.tag == "ours")
    cells = switch_cells("discrepancies", hrnet, SWITCHES)
    return Grid("discrepancies", "paper vs released ProtoSeg code, one switch per cell "
                "(Cityscapes, HRNetV2-W48, the released recipe)", cells,
                seeds=planned_seeds(cells), layout="switches")


def discrepancies_camvid() -> Grid:
    proto = next(c for c in camvid().cells if c.model.head.name == "prototype")
    switches = {k: v for k, v in SWITCHES.items() if k not in CPU_ONLY_OUT}
    cells = switch_cells("discrepancies_camvid", proto, switches,
                         num_prototypes=proto.model.head.num_prototypes,
                         gamma=proto.model.head.gamma)
    return Grid("discrepancies_camvid", "CPU twin of `discrepancies` on CamVid (MiT-B0 from "
                "scratch, 800 steps)", cells, seeds=3, layout="switches")
