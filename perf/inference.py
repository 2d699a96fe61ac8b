"""Figure 3: inference, prototype head vs softmax head, same backbone, decoder and batch.

One call = what evaluation does per batch (`benchmark.train.evaluate.predict_confusion`): the model's
evaluation forward (no clustering, no update: projection + one (D x C*K) product for ProtoSeg),
bilinear upsampling of the class scores to the input size, argmax. Target: <= 1.02 at paper
scale (HRNetV2-W48, 512x512) on a GPU; the CPU ratio is reported.

"FLOP ratio" as in figure 1 (matmul/conv FLOPs of the forward): the prototype head scores
C*K prototypes where the softmax head has C weight vectors, which no implementation avoids
(docs/method.md#prototype-classifier: inference cost = projection + one D x C*K matrix product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from perf.common import (
    Report,
    Table,
    alternate,
    fmt,
    paired_ratio,
    ratio_spread,
    standalone,
    verdict,
)
from perf.measure import count_flops
from perf.train_step import Setup, build, inputs, setups_for

TARGET_GPU = 1.02


def predict_fn(model: torch.nn.Module, images: torch.Tensor):
    from benchmark.train.evaluate import predicted_classes

    model.eval()

    @torch.no_grad()
    def predict() -> torch.Tensor:
        logits = model(images).logits
        logits = F.interpolate(logits.float(), size=images.shape[-2:], mode="bilinear",
                               align_corners=False)
        return predicted_classes(logits)  # the evaluation's argmax

    return predict


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Inference: prototype vs softmax head (time ratio)."""
    device = device or torch.device("cpu")
    setups, skipped = setups_for(device, quick)
    warmup, repeats = (1, 3) if quick else (2, 10)
    rows = []
    for setup in setups:
        if setup.gpu_only and device.type != "cuda":
            continue
        images, _ = inputs(setup, device)
        fns = {head: predict_fn(build(setup, head, device), images)
               for head in ("softmax", "prototype")}
        t = alternate(fns, repeats=repeats, warmup=warmup, device=device)
        flops = {h: count_flops(fn) for h, fn in fns.items()}
        ratio = paired_ratio(t["prototype"], t["softmax"])
        low, high = ratio_spread(t["prototype"], t["softmax"])
        targeted = setup.gpu_only and device.type == "cuda"
        rows.append([setup.label, str(device), t["softmax"].ms(), t["prototype"].ms(),
                     f"{ratio:.3f} [{low:.2f}, {high:.2f}]",
                     f"<= {TARGET_GPU:.2f}" if targeted else "report only",
                     fmt(flops["prototype"] / flops["softmax"], 3),
                     fmt(ratio / (flops["prototype"] / flops["softmax"]), 3),
                     verdict(ratio, TARGET_GPU) if targeted else "–"])
    headers = ["Setup", "Device", "Softmax (ms)", "Prototype (ms)", "Time ratio [IQR]",
               "Target", "FLOP ratio", "Time / FLOP ratio", "Verdict"]
    notes = [f"evaluation forward + bilinear upsampling to the input + argmax, no_grad, fp32; "
             f"median of {repeats} alternated rounds after {warmup} warm-up call(s) each",
             "prototype head: K=10, projection=none (the grids' \"Ours\")",
             "FLOP ratio: matmul/conv FLOPs of the prototype forward over the softmax forward; "
             "the part above 1 is the C*K-vs-C classifier arithmetic of the method"]
    notes += skipped
    return Report("inference", "3. Inference: prototype vs softmax head", [Table(headers, rows)],
                  notes)


__all__ = ["Setup", "predict_fn", "run"]

if __name__ == "__main__":
    raise SystemExit(standalone("inference", run))
