"""Figure 2: the prototype head alone as classes C and prototypes K grow.

One call = the head's training forward and backward on decoder features (B, D, h, w): the
projection MLP (released code, `projection=mlp`), L2-normalised embeddings, similarities to all
C*K prototypes, class scores (max over K, LayerNorm), Sinkhorn-Knopp per class, the momentum
update, PPC and PPD, plus the cross-entropy on the class scores, then backward. D = 720
(HRNetV2-W48's decoder), 128x128 features per image x 2 images (N = 32,768 pixels).

Cost model: the projection costs O(N D^2), everything else O(N C K D), so time / N should be
a + b*C*K; the least-squares fit of time = N (a + b C K) and its R^2 show whether the
implementation grows linearly in C*K*N (no per-class Python work hidden anywhere).

Second table: the part of the step that is per class by nature, Sinkhorn + the prototype
update, batched over classes (`methods/sinkhorn.py` + `PrototypeHead._momentum_update`, the
head's own code) against `per_class_reference` below, a plain Python loop over the classes
present (how the released code does it). Both give the same assignments and prototypes
(checked here at a small size and in tests/perf/test_perf.py). Target: batched <= 0.3x the loop
at C = 150.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from perf.common import (
    Report,
    Table,
    Timings,
    alternate,
    blocky_labels,
    fmt,
    paired_ratio,
    standalone,
    verdict,
)

IGNORE = 255
EMBED_DIM = 720
FEATURE_SIZE = 128
IMAGES = 2
CLASSES = (19, 150, 171)
PROTOTYPES = (1, 10, 50)
LOOP_TARGET = 0.3
LINEAR_R2 = 0.98  # the fit must explain this much of the variance


# ----------------------------------------------------------------------------- per-class reference


@torch.no_grad()
def per_class_reference(own: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
                        correct: torch.Tensor, prototypes: torch.Tensor, eps: float = 0.05,
                        iters: int = 3, gamma: float = 0.999
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sinkhorn-Knopp and the momentum update class by class, in a Python loop.

    own (N, K): similarity of each pixel to its own class's K prototypes; labels (N,);
    emb (N, D) unit embeddings; correct (N,) bool: the pixel's prediction was right;
    prototypes (C, K, D). Returns (assignment (N,) in [0, K), updated prototypes (C, K, D)),
    as the head computes them (docs/method.md#prototype-classifier).
    """
    k = own.shape[1]
    assign = torch.zeros(len(labels), dtype=torch.long, device=own.device)
    protos = prototypes.clone().float()
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().squeeze(1)
        n_c = len(idx)
        s = own[idx].float()
        q = torch.exp((s - s.max()) / eps)
        q = q / q.sum()
        for _ in range(iters):
            q = q / q.sum(dim=0, keepdim=True) / k  # each prototype: mass 1/K
            q = q / q.sum(dim=1, keepdim=True) / n_c  # each pixel: mass 1/N_c
        a = (q * n_c).argmax(dim=1)
        assign[idx] = a
        ok = correct[idx]
        if not bool(ok.any()):
            continue
        a_ok = a[ok]
        sums = torch.zeros(k, emb.shape[1], device=emb.device).index_add_(
            0, a_ok, emb[idx][ok].float())
        hit = torch.bincount(a_ok, minlength=k) > 0
        moved = F.normalize(gamma * protos[c] + (1.0 - gamma) * F.normalize(sums, dim=-1), dim=-1)
        protos[c] = torch.where(hit[:, None], moved, protos[c])
    return assign, protos


@torch.no_grad()
def batched(head: Any, own: torch.Tensor, labels: torch.Tensor, emb: torch.Tensor,
            correct: torch.Tensor) -> torch.Tensor:
    """The head's own code path for the same work: batched Sinkhorn, argmax, momentum update
    (updates `head.prototypes` in place); returns the assignment."""
    from methods.sinkhorn import sinkhorn_per_class

    q = sinkhorn_per_class(own, labels, head.num_classes, head.sinkhorn_eps, head.sinkhorn_iters)
    assign = q.argmax(dim=1)
    pixels = correct.nonzero().squeeze(1)
    # the head holds embeddings channels first, (B, D, P): `emb` (N, D) is a view of such a
    # map's memory (`channels_first_rows`), here one image of N pixels
    head._momentum_update(emb.t()[None], pixels, (labels * head.num_prototypes + assign)[pixels])
    return assign


def channels_first_rows(emb: torch.Tensor) -> torch.Tensor:
    """(N, D) rows viewing a channels-first (D, N) copy: the memory the head's embeddings
    live in, so the loop reference and the batched code read the same layout."""
    return emb.t().contiguous().t()


def clustering_inputs(num_classes: int, k: int, dim: int, n: int, seed: int = 0,
                      device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Unit embeddings and prototypes, labels with every class present, each pixel's
    similarity to its own class's prototypes, and about half the pixels predicted right."""
    gen = torch.Generator().manual_seed(seed)
    protos = F.normalize(torch.randn(num_classes, k, dim, generator=gen), dim=-1)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    labels[:num_classes] = torch.arange(num_classes)
    # embeddings near one of their class's prototypes, so the assignment is not arbitrary
    near = protos[labels, torch.randint(0, k, (n,), generator=gen)]
    emb = F.normalize(near + 0.5 * torch.randn(n, dim, generator=gen) / dim**0.5, dim=-1)
    own = torch.einsum("nd,nkd->nk", emb, protos[labels])
    correct = torch.rand(n, generator=gen) < 0.5
    out = {"own": own, "labels": labels, "emb": emb, "correct": correct, "prototypes": protos}
    return {name: t.to(device) for name, t in out.items()}


def make_head(num_classes: int, k: int, dim: int, device: torch.device,
              projection: str = "mlp", prototypes: torch.Tensor | None = None) -> Any:
    from methods.heads.prototype import PrototypeHead

    torch.manual_seed(0)
    head = PrototypeHead(dim, num_classes, IGNORE, num_prototypes=k, projection=projection)
    if prototypes is not None:
        head.prototypes.copy_(prototypes)
    return head.to(device).train()


def check_reference(num_classes: int = 7, k: int = 4, dim: int = 16, n: int = 600) -> None:
    """Assert that the loop reference and the batched head code agree (assignments equal,
    prototypes allclose)."""
    x = clustering_inputs(num_classes, k, dim, n, seed=3)
    head = make_head(num_classes, k, dim, torch.device("cpu"), projection="none",
                     prototypes=x["prototypes"])
    head.gamma = 0.5  # a large step, so a wrong update would show
    ref_assign, ref_protos = per_class_reference(x["own"], x["labels"], x["emb"], x["correct"],
                                                 x["prototypes"], head.sinkhorn_eps,
                                                 head.sinkhorn_iters, head.gamma)
    assign = batched(head, x["own"], x["labels"], x["emb"], x["correct"])
    if not torch.equal(assign, ref_assign):
        raise AssertionError("per-class reference and batched Sinkhorn assign differently")
    if not torch.allclose(head.prototypes, ref_protos, atol=1e-5, rtol=1e-4):
        raise AssertionError("per-class reference and batched update disagree on the prototypes")


# ----------------------------------------------------------------------------- full head


@dataclass(frozen=True)
class Size:
    classes: int
    k: int
    images: int
    side: int
    dim: int

    @property
    def pixels(self) -> int:
        return self.images * self.side * self.side


def head_step(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor):
    """Forward (training, with labels) and backward of a head alone."""

    def step() -> None:
        head.zero_grad(set_to_none=True)
        feats.grad = None
        out = head(feats, labels)
        loss = F.cross_entropy(out.logits, labels, ignore_index=IGNORE)
        (loss + sum(out.losses.values())).backward()

    return step


def measure_size(size: Size, device: torch.device, warmup: int, repeats: int
                 ) -> dict[str, Timings]:
    from methods.heads.softmax import SoftmaxHead

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(size.images, size.dim, size.side, size.side, generator=gen)
    feats = feats.to(device).requires_grad_(True)
    labels = blocky_labels(size.images, size.side, size.side, size.classes, IGNORE, device,
                           block=8)
    proto = make_head(size.classes, size.k, size.dim, device)
    softmax = SoftmaxHead(size.dim, size.classes, IGNORE).to(device).train()
    fns = {"prototype": head_step(proto, feats, labels),
           "softmax": head_step(softmax, feats, labels)}
    return alternate(fns, repeats=repeats, warmup=warmup, device=device)


def linear_fit(points: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Least squares of time = N (a + b CK) over (N, CK, time) points; returns (a, b, R^2)."""
    x = torch.tensor([[n, n * ck] for n, ck, _ in points], dtype=torch.float64)
    y = torch.tensor([t for *_, t in points], dtype=torch.float64)
    coef = torch.linalg.lstsq(x, y[:, None]).solution[:, 0]
    pred = x @ coef
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return float(coef[0]), float(coef[1]), r2


def sizes_for(quick: bool) -> list[Size]:
    if quick:
        return [Size(c, k, 2, 16, 64) for c in (19, 150) for k in (1, 10)] + \
               [Size(150, 10, 1, 16, 64)]
    grid = [Size(c, k, IMAGES, FEATURE_SIZE, EMBED_DIM) for c in CLASSES for k in PROTOTYPES]
    return grid + [Size(150, 10, 1, FEATURE_SIZE, EMBED_DIM)]  # N halved: linear in N too


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Prototype head alone: cost vs C, K, N; batched Sinkhorn+update vs a per-class loop."""
    device = device or torch.device("cpu")
    check_reference()
    warmup, repeats = (1, 3) if quick else (1, 3)
    results = []
    for size in sizes_for(quick):
        t = measure_size(size, device, warmup, repeats)
        results.append((size, t))
    a, b, r2 = linear_fit([(s.pixels, s.classes * s.k, t["prototype"].median)
                           for s, t in results])
    rows = []
    for size, t in results:
        pred = size.pixels * (a + b * size.classes * size.k)
        proto = t["prototype"]
        rows.append([size.classes, size.k, f"{size.pixels:,}", size.dim,
                     f"{size.classes * size.k * size.pixels / 1e6:,.1f}", proto.ms(),
                     f"{proto.median / size.pixels * 1e9:,.0f}", f"{pred * 1e3:.1f}",
                     f"{(proto.median - pred) / pred * 100:+.0f}%", t["softmax"].ms(),
                     fmt(paired_ratio(proto, t["softmax"]), 1)])
    headers = ["C", "K", "N pixels", "D", "C·K·N (M)", "Prototype head (ms)", "ns / pixel",
               "Fit (ms)", "Residual", "Softmax head (ms)", "Prototype / softmax"]
    fit = Table(["Fit", "a (ns / pixel)", "b (ps / pixel / prototype)", "R²", "Target",
                 "Verdict"],
                [["time = N (a + b C K)", f"{a * 1e9:.1f}", f"{b * 1e12:.2f}", f"{r2:.4f}",
                  f">= {LINEAR_R2}", verdict(r2, LINEAR_R2, better="higher")]])
    notes = [f"forward + backward of the head alone (projection=mlp, PPC, PPD, Sinkhorn, "
             f"momentum update, CE on the class scores), median of {repeats} alternated rounds "
             f"after {warmup} warm-up; softmax head = a 1x1 conv on the same features, for scale",
             f"fit: time = N (a + b C K) with a = {a * 1e9:.1f} ns/pixel (projection, "
             f"normalisation: independent of C K) and b = {b * 1e12:.2f} ps per pixel and "
             f"prototype; R² over all rows (last row N halved)",
             "Residual: measured vs fitted time; small residuals over a 450x range of C K "
             "mean the cost is linear in C K N"]
    loop = loop_vs_batched(device, quick)
    return Report("head_scaling", "2. Prototype head alone: scaling in C, K, N",
                  [Table(headers, rows), fit, loop["table"]], notes + loop["notes"])


def loop_vs_batched(device: torch.device, quick: bool) -> dict[str, list]:
    """Batched Sinkhorn + update vs the per-class loop, at C = 19 and 150 (K = 10)."""
    n = 2 * 16 * 16 if quick else IMAGES * FEATURE_SIZE * FEATURE_SIZE
    dim = 64 if quick else EMBED_DIM
    repeats = 3 if quick else 7
    rows = []
    for c in (19, 150):
        x = clustering_inputs(c, 10, dim, n, device=device)
        x["emb"] = channels_first_rows(x["emb"])
        head = make_head(c, 10, dim, device, projection="none", prototypes=x["prototypes"])
        fns = {
            "batched": lambda: batched(head, x["own"], x["labels"], x["emb"], x["correct"]),
            "loop": lambda: per_class_reference(x["own"], x["labels"], x["emb"], x["correct"],
                                                x["prototypes"]),
        }
        t = alternate(fns, repeats=repeats, warmup=1, device=device)
        ratio = paired_ratio(t["batched"], t["loop"])
        target = f"<= {LOOP_TARGET}" if c == 150 else "–"
        rows.append([c, 10, f"{n:,}", dim, t["batched"].ms(2), t["loop"].ms(2), f"{ratio:.3f}",
                     target, verdict(ratio, LOOP_TARGET) if c == 150 else "–"])
    notes = ["Sinkhorn + update rows: the no-grad clustering part alone (Sinkhorn-Knopp, "
             "3 iterations, argmax, momentum update of the prototypes that received correctly "
             "predicted pixels), batched over classes (the head's code) vs "
             "`per_class_reference` (a Python loop over the classes present); ratio = "
             f"batched / loop, median of {repeats} rounds; both verified equal at a small size; "
             "both read the embeddings from the channels-first memory the head keeps them in"]
    headers = ["C", "K", "N pixels", "D", "Batched (ms)", "Per-class loop (ms)",
               "Batched / loop", "Target", "Verdict"]
    return {"table": Table(headers, rows, "Sinkhorn + prototype update: batched vs per-class "
                                          "loop"), "notes": notes}


if __name__ == "__main__":
    raise SystemExit(standalone("head_scaling", run))
