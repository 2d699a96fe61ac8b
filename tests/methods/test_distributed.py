"""Two CPU processes (gloo) through the same engine code path as one process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from benchmark.overrides import apply_overrides
from benchmark.train.engine import GlobalBatchSampler
from experiments.smoke import smoke

TINY = ["train.iters=6", "train.batch_size=4", "data.train_images=16", "data.val_images=5",
        "data.image_size=32"]  # 5 evaluation images: not divisible by 2 processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from benchmark.train.engine import train_and_evaluate

    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == world
    cell = apply_overrides(smoke().cells[-1], TINY)  # prototype head
    result = train_and_evaluate(cell, seed=0, progress=False, accelerator=accelerator,
                                weights_path=Path(out) / "final.pt")
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"confusion": result.confusion, "weights": result.weights_sha256}))
    torch.distributed.destroy_process_group()


def test_two_processes_share_prototypes_and_evaluate_like_one(tmp_path) -> None:
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    # identical models (incl. the momentum-updated prototype buffers) on both ranks
    assert r0["weights"] == r1["weights"]
    assert r0["confusion"] == r1["confusion"]

    # the 2-process confusion matrix equals a 1-process evaluation of the same weights
    from benchmark.datasets import build_dataset, dataset_info
    from benchmark.train.evaluate import predict_confusion
    from methods import build_model

    cell = apply_overrides(smoke().cells[-1], TINY)
    info = dataset_info(cell.data)
    model = build_model(cell.model, info.num_classes, cell.data.ignore_index)
    model.load_state_dict(torch.load(tmp_path / "final.pt"))
    cm = predict_confusion(model, build_dataset(cell.data, "val"), info.num_classes,
                           cell.data.ignore_index, batch_size=2, progress=False)
    assert cm.tolist() == r0["confusion"]
    assert sum(map(sum, r0["confusion"])) == 5 * 32 * 32  # every pixel counted exactly once


def test_global_batch_is_split_over_processes() -> None:
    one = GlobalBatchSampler(16, 4, steps=3, seed=0)
    halves = [GlobalBatchSampler(16, 4, steps=3, seed=0, rank=r, world_size=2) for r in (0, 1)]
    full = [i for i, _ in one]
    parts = [[i for i, _ in h] for h in halves]
    for step in range(3):
        assert full[4 * step:4 * step + 4] == parts[0][2 * step:2 * step + 2] + \
            parts[1][2 * step:2 * step + 2]
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        GlobalBatchSampler(16, 4, steps=3, seed=0, rank=0, world_size=3)


def test_resumed_sampler_continues_the_same_stream() -> None:
    whole = list(GlobalBatchSampler(10, 2, steps=12, seed=5))
    tail = list(GlobalBatchSampler(10, 2, steps=12, seed=5, start_step=7))
    assert tail == whole[14:]


def _head_worker(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                         rank=rank, world_size=world)
    from methods.heads import PrototypeHead

    torch.manual_seed(0)
    head = PrototypeHead(8, 3, num_prototypes=2, gamma=0.5).train()  # same init on both ranks
    g = torch.Generator().manual_seed(100 + rank)  # different pixels on each rank
    head(torch.randn(2, 8, 4, 4, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g))
    torch.save(head.prototypes, Path(out) / f"protos{rank}.pt")
    torch.distributed.destroy_process_group()


def test_prototypes_are_averaged_over_processes(tmp_path) -> None:
    mp.start_processes(_head_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    p0, p1 = torch.load(tmp_path / "protos0.pt"), torch.load(tmp_path / "protos1.pt")
    assert torch.equal(p0, p1)
    # each rank alone, without torch.distributed: the average of the two, renormalised
    from methods.heads import PrototypeHead

    alone = []
    for rank in (0, 1):
        torch.manual_seed(0)
        head = PrototypeHead(8, 3, num_prototypes=2, gamma=0.5).train()
        g = torch.Generator().manual_seed(100 + rank)
        head(torch.randn(2, 8, 4, 4, generator=g), torch.randint(0, 3, (2, 4, 4), generator=g))
        alone.append(head.prototypes)
    assert not torch.allclose(alone[0], alone[1])
    expected = torch.nn.functional.normalize((alone[0] + alone[1]) / 2, dim=-1)
    torch.testing.assert_close(p0, expected)


def _health_worker(rank: int, world: int, port: int, out: str) -> None:
    """Each rank counts its own assignments; halfway, a checkpoint's counts are saved and
    restored as a resumed run restores them, then counting goes on."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from accelerate import Accelerator

    from benchmark.train.telemetry import HealthMonitor
    from methods import build_model

    accelerator = Accelerator(cpu=True)
    model = build_model(apply_overrides(smoke().cells[-1], TINY).model, 4, 255)
    c, k = model.head.prototypes.shape[:2]
    g = torch.Generator().manual_seed(rank)
    steps = [{"assignments": torch.randint(0, c * k, (50,), generator=g),
              "gumbel_disagree": torch.rand(50, generator=g, dtype=torch.float64)}
             for _ in range(4)]
    uninterrupted, resumed = HealthMonitor(model), HealthMonitor(model)
    for state in steps:
        uninterrupted.observe(state)
    for state in steps[:2]:
        resumed.observe(state)
    saved = resumed.to_state(accelerator)  # every process, as save_state calls it
    resumed = HealthMonitor(model)
    resumed.restore(json.loads(json.dumps(saved)), accelerator.is_main_process)
    for state in steps[2:]:
        resumed.observe(state)
    # the main process's logged summaries go on as without the stop; the final sums all ranks
    results = [{"final": m.final(model, accelerator), "summary": m.summary(model)}
               for m in (uninterrupted, resumed)]
    Path(out, f"health{rank}.json").write_text(json.dumps(results, default=str))
    torch.distributed.destroy_process_group()


def test_prototype_health_counts_survive_a_resume_across_processes(tmp_path) -> None:
    """A checkpoint keeps the counts summed over processes and a resume gives them to one
    process, so the final statistics equal an uninterrupted run's (not world x the saved)."""
    mp.start_processes(_health_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    # to 12 digits: the disagreement sums add the same terms in another order
    uninterrupted, resumed = json.loads((tmp_path / "health0.json").read_text(),
                                        parse_float=lambda s: round(float(s), 12))
    assert resumed == uninterrupted


def _nan_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank 1's loss is NaN (its images are); both ranks run the engine's step with the
    agreement the engine uses under several processes."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from accelerate import Accelerator

    from benchmark.train.engine import (NonFiniteLossError, finite_on_every_process,
                                        training_step)
    from methods import build_model

    accelerator = Accelerator(cpu=True)
    torch.manual_seed(0)
    model = build_model(apply_overrides(smoke().cells[0], TINY).model, 4, 255)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = torch.randn(2, 3, 32, 32) * (float("nan") if rank == 1 else 1.0)
    try:
        training_step(model, optimizer, images, torch.randint(0, 4, (2, 32, 32)), 255,
                      finite=finite_on_every_process(accelerator))
        said = "went on"
    except NonFiniteLossError as err:
        said = str(err)
    Path(out, f"nan{rank}.txt").write_text(said)
    torch.distributed.destroy_process_group()


def test_a_non_finite_loss_in_one_process_stops_every_process(tmp_path) -> None:
    """Without agreement the finite rank would go on into DDP's all-reduce and wait there for
    the stopped one until the collective timed out."""
    mp.start_processes(_nan_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    said = [(tmp_path / f"nan{rank}.txt").read_text() for rank in (0, 1)]
    assert said[0].startswith("loss became non-finite in another process at step 0")
    assert said[1].startswith("loss became nan at step 0")
