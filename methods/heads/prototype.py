"""ProtoSeg: nonparametric prototype head (CVPR 2022), docs/method.md#prototype-classifier.

Each class has K prototypes (a buffer, never touched by SGD). A pixel's class score is its best
cosine similarity to the class's prototypes. During training, pixels of each class are assigned
to that class's prototypes by Sinkhorn-Knopp (batched over classes), prototypes move towards the
mean of the correctly predicted pixels assigned to them (momentum gamma), and two losses shape
the embedding: PPC (contrast against all prototypes) and PPD (pull to the assigned prototype).
Every difference between the paper and the released code is a named option (PrototypeOptions,
docs/method.md#paper-vs-released-code).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from methods.heads.base import (
    HeadOutput,
    SegHead,
    downsample_labels,
    l2_normalize,
    unflatten_pixels,
)
from methods.channel_norm import layer_norm_l2
from methods.heads.options import HeadOptions, PrototypeOptions
from methods.proto_scores import pixel_similarities, scores_and_losses_
from methods.prototype_health import gumbel_disagreement
from methods.sinkhorn import sinkhorn_per_class


class PrototypeHead(SegHead):
    """Class score = max_k cos(embedding, p_{c,k}); prototypes updated by momentum."""

    Options = PrototypeOptions
    options: PrototypeOptions

    def __init__(self, in_channels: int, num_classes: int, ignore_index: int = 255,
                 options: HeadOptions | None = None, **overrides: object) -> None:
        super().__init__(in_channels, num_classes, ignore_index, options, **overrides)
        opts = self.options
        dim, projection = opts.embed_dim or in_channels, opts.projection
        if projection == "none" and dim != in_channels:
            raise ValueError(
                f"prototype head: embed_dim {dim} != decoder width {in_channels} needs projection=mlp"
            )
        self.num_prototypes = opts.num_prototypes
        self.embed_dim = dim
        self.projection_kind = projection
        self.proj_norm_axis = opts.proj_norm_axis
        self.update_assign = opts.update_assign
        self.gamma = opts.gamma
        self.sinkhorn_eps = opts.sinkhorn_eps
        self.sinkhorn_iters = opts.sinkhorn_iters
        self.sinkhorn_all_processes = opts.sinkhorn_scope == "all"
        self.ppc_weight = opts.ppc_weight
        self.ppd_weight = opts.ppd_weight
        self.ppc_tau = opts.ppc_tau

        if projection == "mlp":  # released HRNet code: Conv1x1 - ReLU - Conv1x1
            self.projection = nn.Sequential(
                nn.Conv2d(in_channels, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1)
            )
        else:
            self.projection = nn.Identity()
        self.feat_norm = nn.LayerNorm(dim)
        self.score_norm = (nn.LayerNorm(num_classes) if opts.score_norm == "layernorm"
                           else nn.Identity())
        prototypes = torch.empty(num_classes, opts.num_prototypes, dim)
        nn.init.trunc_normal_(prototypes, std=0.02)
        self.register_buffer("prototypes", l2_normalize(prototypes))

    # ------------------------------------------------------------------ embedding and scores

    def embed(self, feats: Tensor) -> Tensor:
        """Pixel embeddings (B, D, h, w): projection, LayerNorm over channels, L2 normalisation."""
        x = self.projection(feats)
        if self.projection_kind == "mlp":
            # Released code normalises the projection over the last (width) axis by accident.
            x = l2_normalize(x, dim=1 if self.proj_norm_axis == "channel" else 3)
        norm = self.feat_norm  # nn.LayerNorm(D) applied over dim 1, in place of a permute
        return layer_norm_l2(x, norm.weight, norm.bias, norm.eps)

    def pixel_embeddings(self, feats: Tensor) -> Tensor:
        """The unit pixel embeddings the prototypes score (`embed`)."""
        return self.embed(feats)

    def prototype_vectors(self) -> Tensor:
        """The prototypes (C, K, D), unit length, detached, float32."""
        return l2_normalize(self.prototypes.detach().float(), dim=-1)

    def class_vectors(self) -> Tensor:
        """A class's vectors are its K prototypes."""
        return self.prototype_vectors()

    def forward(self, feats: Tensor, target: Tensor | None = None) -> HeadOutput:
        b, _, h, w = feats.shape
        c, k = self.num_classes, self.num_prototypes
        emb_map = self.embed(feats)
        emb = emb_map.flatten(2)  # (B, D, h*w): pixel columns, a view
        # A normalised copy: the buffer is updated in place below, after the graph used it.
        protos = l2_normalize(self.prototypes.to(emb.dtype), dim=-1).reshape(c * k, -1)
        state: dict[str, Tensor] = {"embeddings": emb_map.detach()}
        if target is None or not self.training:
            sims = pixel_similarities(emb, protos)  # (N, C*K) cosine similarities
            scores = self.score_norm(sims.view(-1, c, k).max(dim=2).values)
            return HeadOutput(logits=unflatten_pixels(scores, b, h, w), state=state)

        # Training: the similarities are computed without grad, for the assignments first; the
        # fused op below then turns them into scores and losses in place (methods/proto_scores).
        labels = downsample_labels(target, (h, w)).reshape(-1)
        valid = (labels != self.ignore_index) & (labels >= 0) & (labels < c)
        labels_v = labels[valid]
        with torch.no_grad():
            sims = pixel_similarities(emb, protos)
            rows = valid.nonzero().squeeze(1)  # each pixel's K similarities to its own class
            own = sims.view(-1, c, k)[rows, labels_v]
            q = sinkhorn_per_class(own, labels_v, c, self.sinkhorn_eps, self.sinkhorn_iters,
                                   all_processes=self.sinkhorn_all_processes)
            assign = q.argmax(dim=1)
            if self.update_assign == "gumbel":  # released code: randomised hard assignment
                update_assign = F.gumbel_softmax(q, tau=0.5, hard=True).argmax(dim=1)
            else:
                update_assign = assign
        target_v = labels_v * k + assign  # index of the assigned prototype among all C*K
        # unassigned pixels' targets are IGNORE: no copy of the valid rows
        proto_target = torch.full_like(labels, IGNORE).masked_scatter(valid, target_v)
        raw_scores, ppc, ppd = scores_and_losses_(emb, protos, sims, k, proto_target,
                                                  self.ppc_tau, IGNORE)
        del sims  # consumed: its buffer is the op's log-softmax now
        scores = self.score_norm(raw_scores)
        # Even with no labelled pixel here, run the update: under torch.distributed every rank
        # must join the all-reduce of the prototypes.
        with torch.no_grad():
            correct = scores.detach()[valid].argmax(dim=1) == labels_v
            moved_to = (labels_v * k + update_assign)[correct]
            self._momentum_update(emb.detach(), rows[correct], moved_to)
        logits = unflatten_pixels(scores, b, h, w)
        if labels_v.numel() == 0:
            return HeadOutput(logits=logits, state=state)
        losses: dict[str, Tensor] = {}
        if self.ppc_weight > 0:
            losses["ppc"] = self.ppc_weight * ppc
        if self.ppd_weight > 0:
            losses["ppd"] = self.ppd_weight * ppd
        state["assignments"] = target_v.detach()
        # health: how often the released code's Gumbel draw would leave the argmax prototype
        state["gumbel_disagree"] = gumbel_disagreement(q)
        return HeadOutput(logits=logits, losses=losses, state=state)

    # ------------------------------------------------------------------ momentum update

    @torch.no_grad()
    def _momentum_update(self, emb: Tensor, pixels: Tensor, proto_index: Tensor) -> None:
        """p <- normalize(gamma p + (1-gamma) normalize(sum of assigned correct embeddings)).

        emb (B, D, P) pixel embeddings, channels first; `pixels` the flat indices (b * P + p) of
        the correctly predicted pixels, `proto_index` their prototypes among all C*K. Only
        prototypes that received a pixel move. Under torch.distributed the result is averaged
        over processes so all ranks stay identical.
        """
        c, k, d = self.prototypes.shape
        protos = self.prototypes.reshape(c * k, d).float()
        # only the chosen pixels' rows (a gather); index_add over rows is the fast direction
        per_image = emb.shape[2]
        chosen = emb[pixels // per_image, :, pixels % per_image].float()  # (n, D)
        sums = protos.new_zeros(c * k, d).index_add_(0, proto_index, chosen)
        hit = torch.bincount(proto_index, minlength=c * k) > 0
        moved = l2_normalize(self.gamma * protos + (1.0 - self.gamma) * l2_normalize(sums))
        new = torch.where(hit[:, None], moved, protos)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(new)
            new = l2_normalize(new / dist.get_world_size())
        self.prototypes.copy_(new.reshape(c, k, d))


IGNORE = -100  # target of pixels without an assigned prototype (cross_entropy's default)

