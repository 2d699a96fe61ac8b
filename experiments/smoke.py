"""`smoke`: the four heads on generated data with MiT-B0, about a quarter of an hour on 2 CPU cores.

Softmax is the baseline, prototype K=5 is "ours"; K=1 shows what several prototypes per class
buy on data whose classes have several appearance modes. Pixel contrast is ContrastiveSeg (the
softmax classifier plus an in-batch pixel-contrast loss), ProtoSeg's predecessor.

960 steps (about 15 epochs of the 512 images), long enough for every head's training loss to
flatten; docs/results.md has the results and why shorter schedules mislead.
"""

from __future__ import annotations

from benchmark.config import Cell, DataSpec, HeadSpec, ModelSpec, ResourceSpec, TrainSpec
from experiments import Grid
from experiments.scaling import contrast_warmup, prototype_momentum

DATA = DataSpec(name="synthetic", num_classes=6, image_size=64, modes_per_class=3,
                train_images=512, val_images=64)
RESOURCES = ResourceSpec(gpus=0, cpus_per_task=2, mem_gb=8, timeout_min=30)  # a CPU job
TRAIN = TrainSpec(iters=960, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                  warmup_iters=80, log_every=40)


def _cell(row: str, head: HeadSpec, tag: str = "") -> Cell:
    model = ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=128, head=head)
    return Cell(grid="smoke", row=row, column="MiT-B0", tag=tag, pair="mit_b0" if tag else "",
                data=DATA, model=model, train=TRAIN, resources=RESOURCES)


# Step-count settings scaled to the schedule (experiments/scaling.py): ContrastiveSeg's loss
# starts after an eighth of it (released: 5000 steps) and ProtoSeg's momentum horizon is an
# eighth of it (released: 1000 steps). Features are 16x16 per image (stride 4 of 64x64): a class
# rarely has the released 100 labelled pixels, so classes with more than 20 take part in the
# contrast, with at most 20 anchors each.
PIXEL_CONTRAST = HeadSpec(name="pixel_contrast",
                          contrast_warmup_iters=contrast_warmup(TRAIN.iters),
                          contrast_max_views=20, contrast_min_class_pixels=20)


def _prototype(k: int) -> HeadSpec:
    return HeadSpec(name="prototype", num_prototypes=k, gamma=prototype_momentum(TRAIN.iters))


def smoke() -> Grid:
    cells = (
        _cell("Softmax", HeadSpec(name="softmax"), tag="baseline"),
        _cell("Pixel-query", HeadSpec(name="pixel_query")),
        _cell("Pixel contrast", PIXEL_CONTRAST),
        _cell("Prototype (K=1)", _prototype(1)),
        _cell("Prototype (K=5)", _prototype(5), tag="ours"),
    )
    return Grid("smoke", "four heads on generated data, MiT-B0, CPU minutes", cells, seeds=1)
