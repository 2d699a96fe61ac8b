"""`camvid`: the four heads on real data (CamVid, SegNet split), CPU scale, from scratch.

MiT-B0 + the SegFormer all-MLP decoder, trained from random initialisation on small crops of
half-resolution images (240x180, random rescale 0.5-2.0, crop, flip), evaluated on the 233 test
images at 240x180 with the metric on the original 480x360 labels. Softmax is the baseline,
ProtoSeg with K=10 prototypes per class is "ours"; pixel contrast is ContrastiveSeg (softmax plus
an in-batch pixel-contrast loss); 3 seeds each. Sized so the first three heads' 9 runs fit in
about 36 minutes on 2 quiet CPU cores (timings below). Data: `--data-root` or $PROTOSEG_DATA
holding `camvid/`; the default search includes ../shared/data. Models trained from scratch on
367 images score far below the ImageNet-pretrained literature (SegNet about 60 mIoU).
"""

from __future__ import annotations

from benchmark.config import Cell, DataSpec, EvalSpec, HeadSpec, ModelSpec, ResourceSpec, TrainSpec
from experiments import Grid
from experiments.scaling import contrast_warmup, prototype_momentum

DATA = DataSpec(name="camvid", num_classes=11, val_split="test", scale_long=240, scale_short=180,
                min_scale=0.5, max_scale=2.0, crop_size=64, crop_width=64, cat_max_ratio=0.75,
                flip_prob=0.5, photometric="none")
TRAIN = TrainSpec(iters=800, batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=0.01,
                  warmup_iters=40, log_every=40)
EVAL = EvalSpec(batch_size=8)  # every CamVid image is 480x360, so batches collate
RESOURCES = ResourceSpec(gpus=0, cpus_per_task=2, mem_gb=8, timeout_min=60)  # a CPU job
# Timed on 2 quiet cores (30-step runs of each cell): a training step of 8 crops takes about
# 0.22 s (softmax), 0.24 s (pixel-query), 0.21 s (prototype) with data loading; evaluating the
# 233 test images takes 25 s, 113 s (joint attention over the 45x60 tokens of each image) and
# 15 s. Per seed about 3.3 + 5.1 + 3.0 min, so the 9 runs take about 36 min. Re-time with
# `run_all.py --grid camvid --seeds 1 --set train.iters=30 --results /tmp/t` and the records'
# train_s / 30 and eval_s. The pixel-contrast row was added later and not timed on quiet cores:
# its evaluation is the softmax head's (25 s) and its step adds a 1x1-conv projection and the loss
# on at most 1024 anchors, so expect a little over softmax's 3.3 min per seed (about 46 min for
# all 12 runs).

# Step-count settings scaled to the 800-step schedule (experiments/scaling.py): ContrastiveSeg's
# loss starts after 100 steps (released: 5000) and ProtoSeg's momentum is 0.99 (a 100-step
# horizon; released 0.999, 1000 steps). 64x64 crops give 16x16 features: classes with more than
# 20 labelled pixels there take part in the contrast, at most 20 anchors each (the released 100
# would leave out most classes of a crop).
PIXEL_CONTRAST = HeadSpec(name="pixel_contrast",
                          contrast_warmup_iters=contrast_warmup(TRAIN.iters),
                          contrast_max_views=20, contrast_min_class_pixels=20)
PROTOTYPE = HeadSpec(name="prototype", num_prototypes=10, gamma=prototype_momentum(TRAIN.iters))


def _cell(row: str, head: HeadSpec, tag: str = "") -> Cell:
    model = ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=128, head=head)
    return Cell(grid="camvid", row=row, column="MiT-B0", tag=tag, pair="mit_b0" if tag else "",
                data=DATA, model=model, train=TRAIN, eval=EVAL, resources=RESOURCES)


def camvid() -> Grid:
    cells = (
        _cell("Softmax", HeadSpec(name="softmax"), tag="baseline"),
        _cell("Pixel-query", HeadSpec(name="pixel_query")),
        _cell("Pixel contrast", PIXEL_CONTRAST),
        _cell("Prototype (K=10)", PROTOTYPE, tag="ours"),
    )
    return Grid("camvid", "four heads on real CamVid (SegNet split), MiT-B0 from scratch, CPU",
                cells, seeds=3)
