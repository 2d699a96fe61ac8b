"""ContrastiveSeg's pixel-contrast head (docs/method.md#pixel-contrast-head): the loss against hand computations,
anchor sampling, the FIFO memory, cross-process queues, inference and exact resume."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchmark.config import ConfigError
from benchmark.overrides import apply_overrides
from experiments import get_grid
from methods.contrast import fifo_write, queue_contents, queue_entries, sample_anchors
from methods.heads import PixelContrastHead, SoftmaxHead
from methods.losses import pixel_contrast_loss

IGNORE = 255
# Four unit pixel embeddings (2-D, by angle) of two classes: the tiny example of every hand check.
ANGLES = [0.0, 0.4, 0.25, 0.7]  # interleaved classes: a loss far from 0
LABELS = [0, 0, 1, 1]


def unit(angles: list[float]) -> torch.Tensor:
    return torch.tensor([[math.cos(a), math.sin(a)] for a in angles])


def dot(u: list[float], v: list[float]) -> float:
    return u[0] * v[0] + u[1] * v[1]


def hand_loss(anchors: list[list[float]], labels: list[int], contrast: list[list[float]],
              contrast_labels: list[int], tau: float, base_tau: float, in_batch: bool) -> float:
    """The supervised contrast written out: mean over anchors of the mean over positives of
    -(tau/base_tau) * log(exp(s_ip) / (exp(s_ip) + sum over negatives exp(s_in)))."""
    per_anchor = []
    for i, (a, y) in enumerate(zip(anchors, labels)):
        negatives = sum(math.exp(dot(a, c) / tau) for c, z in zip(contrast, contrast_labels)
                        if z != y)
        terms = [math.log(math.exp(dot(a, c) / tau) / (math.exp(dot(a, c) / tau) + negatives))
                 for j, (c, z) in enumerate(zip(contrast, contrast_labels))
                 if z == y and not (in_batch and j == i)]
        per_anchor.append(-(tau / base_tau) * sum(terms) / len(terms))
    return sum(per_anchor) / len(per_anchor)


def head_on_fixed_embeddings(variant: str, emb: torch.Tensor, **kw) -> PixelContrastHead:
    """A 2-class head whose projection is replaced by the given (1, 2, 2, 2) embedding map."""
    torch.manual_seed(0)
    head = PixelContrastHead(2, 2, IGNORE, variant=variant, warmup_iters=0, min_class_pixels=1,
                             max_views=2, proj_dim=2, **kw).train()
    head.embed = lambda feats: emb  # type: ignore[method-assign]
    return head


def as_map(vectors: torch.Tensor) -> torch.Tensor:
    """Four 2-D vectors -> a (1, 2, 2, 2) embedding map, pixels in row-major order."""
    return vectors.t().reshape(1, 2, 2, 2)


TARGET = torch.tensor(LABELS).reshape(1, 2, 2)


# --------------------------------------------------------------------------- the loss


def test_in_batch_loss_equals_hand_computation() -> None:
    vecs = unit(ANGLES)
    expected = hand_loss(vecs.tolist(), LABELS, vecs.tolist(), LABELS, 0.1, 0.07, in_batch=True)
    got = pixel_contrast_loss(vecs, torch.tensor(LABELS), tau=0.1, base_tau=0.07)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # through the head: all four pixels are anchors, weight 0.1 (released in-batch default)
    head = head_on_fixed_embeddings("in_batch", as_map(vecs))
    out = head(torch.randn(1, 2, 2, 2), TARGET)
    assert sorted(out.state["anchors"].tolist()) == [0, 1, 2, 3]
    assert out.losses["contrast"].item() == pytest.approx(0.1 * expected, rel=1e-5)


def test_memory_loss_equals_hand_computation() -> None:
    first, second = unit(ANGLES), unit([0.1, 0.5, 0.3, 0.8])
    head = head_on_fixed_embeddings("memory", as_map(first), queue_size=8)
    out = head(torch.randn(1, 2, 2, 2), TARGET)
    assert str(out.losses["contrast"].item()) == "0.0"  # the memory is empty at first (not -0.0)
    # the queues now hold each class's mean (segment) and its pixels (pixel queue)
    seg = [torch.nn.functional.normalize(first[0] + first[1], dim=0).tolist(),
           torch.nn.functional.normalize(first[2] + first[3], dim=0).tolist()]
    memory = seg + first.tolist()
    memory_labels = [0, 1] + LABELS
    expected = hand_loss(second.tolist(), LABELS, memory, memory_labels, 0.07, 0.07,
                         in_batch=False)
    head.embed = lambda feats: as_map(second)  # type: ignore[method-assign]
    out = head(torch.randn(1, 2, 2, 2), TARGET)
    assert out.losses["contrast"].item() == pytest.approx(expected, rel=1e-5)  # weight 1
    got = pixel_contrast_loss(second, torch.tensor(LABELS), torch.tensor(memory),
                              torch.tensor(memory_labels), tau=0.07, base_tau=0.07)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_anchor_without_positive_is_left_out_not_nan() -> None:
    vecs = unit([0.0, 0.3, 0.2])
    loss = pixel_contrast_loss(vecs, torch.tensor([0, 0, 1]))  # class 1 has a single anchor
    only_class0 = hand_loss(vecs.tolist()[:2], [0, 0], vecs.tolist(), [0, 0, 1], 0.1, 0.07, True)
    assert loss.item() == pytest.approx(only_class0, rel=1e-5)


def test_loss_is_weighted_zero_during_warm_up_and_keeps_the_graph() -> None:
    torch.manual_seed(0)
    head = PixelContrastHead(8, 3, IGNORE, warmup_iters=2, min_class_pixels=4, max_views=8).train()
    g = torch.Generator().manual_seed(1)
    weights = []
    for _ in range(3):
        feats = torch.randn(2, 8, 6, 6, generator=g)
        out = head(feats, torch.randint(0, 3, (2, 6, 6), generator=g))
        head.zero_grad()
        out.losses["contrast"].backward()
        # every projection parameter takes part even at weight 0 (DDP needs no unused params)
        assert all(p.grad is not None for p in head.projection.parameters())
        weights.append(out.losses["contrast"].item())
    assert weights[:2] == [0.0, 0.0] and weights[2] > 0
    assert int(head.train_steps) == 3
    head.eval()
    head(torch.randn(1, 8, 6, 6))
    assert int(head.train_steps) == 3  # evaluation forwards do not count
    assert "train_steps" in head.state_dict()  # so checkpoints carry the warm-up position


# --------------------------------------------------------------------------- sampling


def sampling_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two images of 300 pixels, classes 0-2, with known hard (mispredicted) / easy counts."""
    labels = torch.full((2, 300), IGNORE)
    pred = torch.zeros(2, 300, dtype=torch.long)
    layout = {  # (image, class): (hard, easy); image 0 class 2 has too few pixels (40 <= 50)
        (0, 0): (100, 50), (0, 1): (10, 90), (0, 2): (20, 20), (1, 0): (0, 51), (1, 2): (240, 9),
    }
    start = [0, 0]
    for (b, c), (hard, easy) in layout.items():
        s = start[b]
        labels[b, s:s + hard + easy] = c
        pred[b, s:s + hard] = (c + 1) % 3
        pred[b, s + hard:s + hard + easy] = c
        start[b] += hard + easy
    return labels, pred


def test_sampling_respects_caps_and_the_hard_easy_split() -> None:
    labels, pred = sampling_batch()
    torch.manual_seed(0)
    idx = sample_anchors(labels, pred, 3, IGNORE, max_anchors=100, max_views=30,
                         min_class_pixels=50)
    assert idx.unique().numel() == idx.numel() == 100  # 4 groups x min(100 // 4, 30) anchors
    flat_l, flat_p = labels.reshape(-1), pred.reshape(-1)
    image = idx // 300
    found = {}
    for b, c in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)]:
        mine = idx[(image == b) & (flat_l[idx] == c)]
        hard = int((flat_p[mine] != c).sum())
        found[(b, c)] = (hard, mine.numel() - hard)
    assert found == {
        (0, 0): (12, 13),  # both pools large: n // 2 hard, the rest easy
        (0, 1): (10, 15),  # 10 hard only: the easy pool fills the shortfall
        (0, 2): (0, 0),  # 40 labelled pixels, not more than 50: skipped
        (1, 0): (0, 25),  # no hard pixel at all
        (1, 2): (16, 9),  # 9 easy only: the hard pool fills the shortfall
    }
    assert (flat_l[idx] != IGNORE).all()


def test_sampling_caps_views_and_groups_and_is_seeded() -> None:
    labels, pred = sampling_batch()
    torch.manual_seed(0)
    idx = sample_anchors(labels, pred, 3, IGNORE, max_anchors=1024, max_views=7,
                         min_class_pixels=50)
    assert idx.numel() == 4 * 7  # max_views per (image, class)
    torch.manual_seed(0)
    assert torch.equal(idx, sample_anchors(labels, pred, 3, IGNORE, 1024, 7, 50))
    torch.manual_seed(1)
    assert not torch.equal(idx, sample_anchors(labels, pred, 3, IGNORE, 1024, 7, 50))
    # more eligible groups (4) than anchors (3): three groups, one anchor each
    few = sample_anchors(labels, pred, 3, IGNORE, max_anchors=3, max_views=7, min_class_pixels=50)
    groups = {(int(i) // 300, int(labels.reshape(-1)[i])) for i in few}
    assert few.numel() == 3 and len(groups) == 3
    none = sample_anchors(labels, pred, 3, IGNORE, min_class_pixels=1000)
    assert none.numel() == 0


# --------------------------------------------------------------------------- memory


def test_fifo_queue_keeps_the_newest_entries_in_order() -> None:
    queue = torch.zeros(2, 4, 1)
    ptr, filled = torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    rows = torch.arange(1.0, 8.0)[:, None]  # entries 1..7 of class 0
    fifo_write(queue, ptr, filled, rows[:3], torch.zeros(3, dtype=torch.long))
    assert ptr.tolist() == [3, 0] and filled.tolist() == [3, 0]  # advanced by the number written
    fifo_write(queue, ptr, filled, rows[3:], torch.zeros(4, dtype=torch.long))
    assert queue_contents(queue, ptr, filled, 0)[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert filled.tolist() == [4, 0] and queue[1].abs().sum() == 0
    # one write of more rows than the capacity keeps its newest `size` rows, in order
    fifo_write(queue, ptr, filled, torch.arange(10.0, 16.0)[:, None],
               torch.ones(6, dtype=torch.long))
    assert queue_contents(queue, ptr, filled, 1)[:, 0].tolist() == [12.0, 13.0, 14.0, 15.0]
    assert queue_contents(queue, ptr, filled, 0)[:, 0].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_class_zero_is_enqueued_and_the_ignore_label_never() -> None:
    emb = torch.nn.functional.normalize(torch.randn(1, 6, 3), dim=-1)
    labels = torch.tensor([[0, 0, IGNORE, 2, IGNORE, 0]])
    seg, seg_cls, pix, pix_cls = queue_entries(emb, labels, 3, IGNORE, pixels_per_class=10)
    assert seg_cls.tolist() == [0, 2] and sorted(pix_cls.tolist()) == [0, 0, 0, 2]
    ignored = emb[0, [2, 4]]
    assert not any(torch.allclose(p, q) for p in pix for q in ignored)
    expected0 = torch.nn.functional.normalize(emb[0, [0, 1, 5]].sum(0), dim=0)
    torch.testing.assert_close(seg[0], expected0)
    # through the head: class 0 fills its queues, the ignored pixels never enter
    torch.manual_seed(0)
    head = PixelContrastHead(4, 3, IGNORE, variant="memory", queue_size=16).train()
    target = torch.tensor([[[0, 0, IGNORE], [2, IGNORE, 0]]])
    head(torch.randn(1, 4, 2, 3), target)
    assert head.segment_filled.tolist() == [1, 0, 1] and head.pixel_filled.tolist() == [3, 0, 1]


def test_queues_are_buffers_and_fixed_size() -> None:
    head = PixelContrastHead(4, 3, IGNORE, variant="memory", queue_size=5, proj_dim=8)
    state = head.state_dict()
    for name in ("segment", "pixel"):
        assert state[f"{name}_queue"].shape == (3, 5, 8)
        assert f"{name}_ptr" in state and f"{name}_filled" in state
    assert "segment_queue" not in PixelContrastHead(4, 3).state_dict()  # in-batch: no memory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _queue_worker(rank: int, world: int, port: int, folder: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    torch.manual_seed(0)  # same initial head on both ranks
    head = PixelContrastHead(8, 3, IGNORE, variant="memory", queue_size=32,
                             min_class_pixels=2, max_views=4).train()
    g = torch.Generator().manual_seed(10 + rank)  # different images (and entry counts) per rank
    for _ in range(2):
        target = torch.randint(0, 2 + rank, (2, 4, 4), generator=g)
        out = head(torch.randn(2, 8, 4, 4, generator=g), target)
        out.losses["contrast"].backward()
    memory = {k: v for k, v in head.state_dict().items() if k.startswith(("segment", "pixel"))}
    torch.save({"state": memory, "emb": out.state["embeddings"], "target": target},
               Path(folder) / f"{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_processes_end_with_identical_queues(tmp_path) -> None:
    mp.start_processes(_queue_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert r0["state"].keys() == r1["state"].keys()
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    # the last step's segment entries: rank 0's images, then rank 1's, at the newest slots
    expected = []
    for r in (r0, r1):
        emb = r["emb"].permute(0, 2, 3, 1).reshape(2, 16, -1)
        seg, cls, _, _ = queue_entries(emb, r["target"].reshape(2, 16), 3, IGNORE)
        expected += [(int(c), s) for c, s in zip(cls, seg)]
    state = r0["state"]
    for c in range(3):
        mine = [s for k, s in expected if k == c]
        if mine:
            newest = queue_contents(state["segment_queue"], state["segment_ptr"],
                                    state["segment_filled"], c)[-len(mine):]
            torch.testing.assert_close(newest, torch.stack(mine))
    assert int(state["segment_filled"][2]) > 0  # class 2 exists on rank 1 only


# --------------------------------------------------------------------------- inference


def test_inference_equals_a_softmax_head_with_the_same_weights() -> None:
    torch.manual_seed(0)
    head = PixelContrastHead(16, 5, IGNORE)
    softmax = SoftmaxHead(16, 5, IGNORE)
    softmax.load_state_dict({k: v for k, v in head.state_dict().items()
                             if k.startswith("classifier.")})
    feats = torch.randn(2, 16, 6, 7)
    head.eval(), softmax.eval()
    out = head(feats)
    assert torch.equal(out.logits, softmax(feats).logits)
    assert out.losses == {} and out.state == {}  # no projection at inference
    head.train()
    train_out = head(feats, torch.randint(0, 5, (2, 12, 14)))
    assert torch.equal(train_out.logits, softmax(feats).logits)


# --------------------------------------------------------------------------- config and grids


def test_overrides_validate_the_new_settings() -> None:
    cell = get_grid("smoke").cells[0]
    memory = apply_overrides(cell, ["model.head.name=pixel_contrast",
                                    "model.head.contrast_variant=memory",
                                    "model.head.contrast_tau=none"])
    assert memory.model.head.contrast_variant == "memory" and memory.model.head.contrast_tau is None
    contrast = ["model.head.name=pixel_contrast"]  # the option exists on that head only
    with pytest.raises(ConfigError, match="contrast_variant: 'bank'; choose one of in_batch"):
        apply_overrides(cell, contrast + ["model.head.contrast_variant=bank"])
    with pytest.raises(ConfigError, match="contrast_tau: must be > 0"):
        apply_overrides(cell, contrast + ["model.head.contrast_tau=0"])
    with pytest.raises(ConfigError, match="the softmax head has no such option"):
        apply_overrides(cell, ["model.head.contrast_variant=memory"])


@pytest.mark.parametrize("grid", ["smoke", "camvid"])
def test_cpu_grids_have_a_pixel_contrast_row(grid: str) -> None:
    cells = get_grid(grid).cells
    rows = {c.row: c for c in cells}
    pc = rows["Pixel contrast"]
    assert pc.model.head.name == "pixel_contrast" and pc.tag == ""
    # warm-up: a fraction of the grid's short schedule, not the released 5000 steps
    assert 0 < pc.model.head.contrast_warmup_iters < pc.train.iters // 4
    softmax = rows["Softmax"]
    assert (pc.data, pc.train, pc.eval) == (softmax.data, softmax.train, softmax.eval)
    assert cells[-1].model.head.name == "prototype"  # tests take the prototype cell as the last


# --------------------------------------------------------------------------- exact resume

TINY = ["train.iters=7", "train.batch_size=4", "data.train_images=8", "data.val_images=2",
        "data.image_size=32", "train.log_every=1", "model.head.contrast_variant=memory",
        "model.head.contrast_warmup_iters=3", "model.head.contrast_queue_size=12",
        "model.head.contrast_min_class_pixels=4", "model.head.contrast_max_views=8"]


def test_memory_variant_resumes_bitwise_equal(tmp_path, monkeypatch) -> None:
    import os
    import signal

    import benchmark.train.engine as engine
    from benchmark.stops import Interrupted

    cell = apply_overrides(next(c for c in get_grid("smoke").cells if c.row == "Pixel contrast"),
                           TINY)
    reference = engine.train_and_evaluate(cell, seed=2, progress=False)
    assert reference.history[-1]["contrast"] > 0  # the loss is on after the warm-up
    real_set_lr = engine.set_lr

    def set_lr(optimizer, c, step):
        if step == 4:  # interrupted after the warm-up, with the (wrapped) queues filled
            os.kill(os.getpid(), signal.SIGUSR2)
        return real_set_lr(optimizer, c, step)

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr("benchmark.train.engine.set_lr", set_lr)  # the loop's step (train/engine.py)
        with pytest.raises(Interrupted):
            engine.train_and_evaluate(cell, seed=2, progress=False, checkpoint_dir=ckpt)
    resumed = engine.train_and_evaluate(cell, seed=2, progress=False, checkpoint_dir=ckpt)
    assert resumed.timings.resumed_from_step == 5
    assert resumed.weights_sha256 == reference.weights_sha256
    assert json.dumps(resumed.history) == json.dumps(reference.history)
