"""ContrastiveSeg (ICCV 2021): softmax head + pixel contrast (docs/method.md#pixel-contrast-head).

The classifier is the softmax head's 1x1 convolution; a projection head (Conv1x1 D->D, BN, ReLU,
Conv1x1 D->256, L2 normalisation) exists only for the training loss, so inference costs exactly
what the softmax head costs. The loss is a supervised contrast of sampled pixel anchors, either
with each other across the images of the batch (`in_batch`) or with a per-class memory of pixel
and segment embeddings (`memory`). Its weight is 0 during the first `warmup_iters` training
steps, counted by a buffer of the head (so checkpoints carry it and a resumed run is exact);
the loss is still computed then, keeping every parameter in the graph (DDP) as released.

Bugs of the released code (tfzhou/ContrastiveSeg) fixed here, the intended behaviour instead:
- memory pixel queue: the pointer advanced by 1 per write of up to 10 rows; it advances by the
  number written, and a write that wraps continues at the start of the queue (true FIFO),
  where the released code wrote into the last slots, overwriting the newest entries;
- memory enqueue and negatives skipped class 0 as if it were "unlabelled" (and padded the
  contrast set with zero vectors labelled 0); every real class takes part, only the ignore
  label is excluded;
- memory negatives included slots never written (random initial vectors); only written slots
  are used (queues start empty);
- memory pixel enqueue drew its random pixels from the whole image, not from the class's pixels;
- memory enqueue subsampled labels by the configured `network.stride`, not the embedding's
  actual stride; labels are resized (nearest) to the embedding's own size everywhere;
- memory loss removed "self" pairs against queue entry i for anchor i; anchors are not in the
  queue, so no pair is removed;
- anchors without a positive divided by zero (NaN); they are left out of the mean;
- memory enqueue was local to each process, and DDP's buffer broadcast then kept only rank 0's
  queues; what each process enqueues is all-gathered (rank order), so every queue sees every
  image of the global batch and all processes hold identical queues.
Anchors, as released, are sampled and contrasted per process.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from methods.contrast import all_gather_rows, fifo_write, queue_entries, sample_anchors
from methods.heads.base import HeadOutput, downsample_labels, l2_normalize
from methods.heads.options import HeadOptions, PixelContrastOptions
from methods.heads.softmax import SoftmaxHead
from methods.losses import pixel_contrast_loss


class PixelContrastHead(SoftmaxHead):
    """Softmax logits; training adds `losses["contrast"]`, the weighted pixel-contrast loss."""

    Options = PixelContrastOptions
    options: PixelContrastOptions

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: HeadOptions | None = None, **overrides: object) -> None:
        super().__init__(in_channels, num_classes, ignore_index, options, **overrides)
        opts = self.options
        self.variant = opts.variant
        self.tau, self.weight = opts.resolved()
        self.base_tau = opts.base_tau
        self.warmup_iters = opts.warmup_iters
        self.max_anchors = opts.max_anchors
        self.max_views = opts.max_views
        self.min_class_pixels = opts.min_class_pixels
        self.queue_pixels = opts.queue_pixels
        queue_size, proj_dim = opts.queue_size, opts.proj_dim
        self.projection = nn.Sequential(  # released 'convmlp' projection head
            nn.Conv2d(in_channels, in_channels, 1), nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True), nn.Conv2d(in_channels, proj_dim, 1),
        )
        # training steps seen so far: decides the warm-up, saved with the model for exact resume
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        if self.variant == "memory":
            for name in ("segment", "pixel"):
                self.register_buffer(f"{name}_queue",
                                     torch.zeros(num_classes, queue_size, proj_dim))
                self.register_buffer(f"{name}_ptr", torch.zeros(num_classes, dtype=torch.long))
                self.register_buffer(f"{name}_filled", torch.zeros(num_classes, dtype=torch.long))

    def embed(self, feats: Tensor) -> Tensor:
        """Unit projection embeddings (B, proj_dim, h, w) used only by the loss."""
        return l2_normalize(self.projection(feats), dim=1)

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        logits = self.classifier(feats)
        if target is None or not self.training:
            return HeadOutput(logits=logits)
        emb_map = self.embed(feats)
        b, d, h, w = emb_map.shape
        labels = downsample_labels(target, (h, w)).reshape(b, -1)  # the embedding's own stride
        pred = logits.detach().argmax(dim=1).reshape(b, -1)
        emb = emb_map.permute(0, 2, 3, 1).reshape(b, h * w, d).float()
        index = sample_anchors(labels, pred, self.num_classes, self.ignore_index,
                               self.max_anchors, self.max_views, self.min_class_pixels)
        anchors, anchor_labels = emb.reshape(-1, d)[index], labels.reshape(-1)[index]
        contrast = contrast_labels = None
        if self.variant == "memory":  # this step's loss sees the queues from before its enqueue
            contrast, contrast_labels = self.memory()
        if index.numel() == 0 or (contrast is not None and contrast.numel() == 0):
            loss = emb.sum() * 0.0 + 0.0  # nothing to contrast: a zero (not -0) in the graph
        else:  # in float32 even under AMP: logits up to 2 / tau are exponentiated
            with torch.autocast(emb.device.type, enabled=False):
                loss = pixel_contrast_loss(anchors, anchor_labels, contrast, contrast_labels,
                                           self.tau, self.base_tau)
        warm = int(self.train_steps) >= self.warmup_iters
        if self.variant == "memory":
            self.enqueue(emb.detach(), labels)
        self.train_steps += 1
        return HeadOutput(logits=logits, losses={"contrast": (self.weight if warm else 0.0) * loss},
                          state={"embeddings": emb_map.detach(), "anchors": index})

    # ------------------------------------------------------------------ memory bank

    def memory(self) -> tuple[Tensor, Tensor]:
        """The written entries of both queues, (M, D) and their classes (M,); a copy."""
        vectors, classes = [], []
        for name in ("segment", "pixel"):
            queue, filled = getattr(self, f"{name}_queue"), getattr(self, f"{name}_filled")
            used = torch.arange(queue.shape[1], device=queue.device)[None] < filled[:, None]
            vectors.append(queue[used])
            classes.append(used.nonzero()[:, 0])
        return torch.cat(vectors), torch.cat(classes)

    @torch.no_grad()
    def enqueue(self, emb: Tensor, labels: Tensor) -> None:
        """Write this batch's segment means and sampled pixels, from every process, FIFO."""
        segments, seg_cls, pixels, pix_cls = queue_entries(
            emb, labels, self.num_classes, self.ignore_index, self.queue_pixels)
        # one gather of [queue id, class, vector] rows from all processes, in rank order
        rows = torch.cat([
            torch.cat([torch.zeros_like(seg_cls)[:, None].float(), seg_cls[:, None].float(),
                       segments.float()], dim=1),
            torch.cat([torch.ones_like(pix_cls)[:, None].float(), pix_cls[:, None].float(),
                       pixels.float()], dim=1),
        ])
        rows = all_gather_rows(rows)
        for queue_id, name in enumerate(("segment", "pixel")):
            mine = rows[rows[:, 0] == queue_id]
            fifo_write(getattr(self, f"{name}_queue"), getattr(self, f"{name}_ptr"),
                       getattr(self, f"{name}_filled"), mine[:, 2:], mine[:, 1].long())


__all__ = ["PixelContrastHead"]
