"""Peer figure: the suite against MMSegmentation 1.2.2 at every stage of a run, on the same
models with the same weights and the same inputs.

Rows: the training step (SegFormer MiT-B0 + 256-channel head, 150 classes, AdamW, 2x256x256
and 1x512x512; FCN ResNet-101-D8 + auxiliary head, SGD, 1x128x128), the training data pipeline
(the ADE20K FCN recipe over 16 generated JPEG/PNG pairs, decode included, what a DataLoader
worker makes: both sides leave normalisation and padding to the device), whole-image inference
(SegFormer-B0, 512x683) and sliding-window inference (crop 512, stride 341, 512x1024).

MMSeg builds each model from its own config (shipped in the mmseg package, SyncBN -> BN); the
suite's model gets MMSeg's random weights through `benchmark.checkpoints` (the zoo-file
conversion). Before timing, each row checks that the two sides agree: the first two steps'
losses (so the optimizers' parameter groups agree too), predictions pixel for pixel, pipeline
samples within one grey level with equal labels (the same random draws on both sides: MMSeg's
numpy draws are served from the torch RNG the suite uses). Dropout and stochastic depth are
off on both sides, and for timing every learning rate is 0 (the same arithmetic; the weights
stay where the check left them). Times: one process, one torch and one OpenCV thread, the two
sides alternating (perf/common.py); ratio = suite / MMSeg time, below 1 = the suite is faster.
Needs the `fidelity` extra; `perf.run` runs it, the tests do not.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import numpy as np
import torch

from perf.common import (Report, Table, Timings, alternate, blocky_labels, paired_ratio,
                         ratio_spread, standalone, verdict)
from perf.mmcv_lite import register_stand_in

NUM_CLASSES, IGNORE = 150, 255
SEGFORMER = "segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512"
FCN = "fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512"
TARGETS = {"step": 0.85, "inference": 0.80, "pipeline": 0.80}  # issue 23
LOSS_TOL = 1e-4  # relative; the two sides sum the same terms in a different order


@dataclass(frozen=True)
class StepSetup:
    """One training-step row: the paper model, its MMSeg config, the batch."""

    label: str
    model: str  # segformer | fcn
    batch: int
    size: int
    fused: bool = False  # the suite with train.fused_optimizer (MMSeg as always); GPU only:
    # on the CPU the suite's SGD runs the fused kernel anyway (benchmark/train/optim.py)


STEP_SETUPS = (
    StepSetup("SegFormer MiT-B0 + 256 head, 150 classes, AdamW, 2x256x256", "segformer", 2, 256),
    StepSetup("SegFormer MiT-B0 + 256 head, 150 classes, AdamW, 1x512x512", "segformer", 1, 512),
    StepSetup("FCN R101-D8 + auxiliary head, SGD, 1x128x128", "fcn", 1, 128),
    StepSetup("FCN R101-D8, as above; suite with train.fused_optimizer", "fcn", 1, 128, True),
)
QUICK_STEP_SETUPS = (StepSetup("SegFormer MiT-B0 (quick), 1x64x64", "segformer", 1, 64),
                     StepSetup("FCN R101-D8 + aux (quick), 1x64x64", "fcn", 1, 64))


# ----------------------------------------------------------------------------- the two sides


def mmseg() -> Any:
    """MMSegmentation 1.2.2 (mmcv-lite: a stand-in for the compiled ops none of these models
    calls, as tests/fidelity/conftest.py registers) and its model registry."""
    register_stand_in()
    import mmseg as package
    import mmseg.models  # noqa: F401  (registers the models)
    from mmengine.registry import init_default_scope

    if package.__version__ != "1.2.2":
        raise RuntimeError(f"mmsegmentation {package.__version__}; the peer is 1.2.2")
    from mmengine.logging import MMLogger

    init_default_scope("mmseg")
    MMLogger.get_current_instance().setLevel("WARNING")  # not every parameter group's line
    return package


def config(name: str) -> Any:
    """MMSeg's full config `configs/<name>.py`."""
    from mmengine import Config

    return Config.fromfile(str(Path(mmseg().__file__).parent / ".mim" / "configs" / f"{name}.py"))


def _bn(cfg: Any) -> None:
    """SyncBN -> BN everywhere (one process)."""
    if isinstance(cfg, dict):
        if cfg.get("type") == "SyncBN":
            cfg["type"] = "BN"
        for value in cfg.values():
            _bn(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _bn(value)


def models(which: str, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    """(suite model, MMSeg model, MMSeg config) with MMSeg's random weights in both, dropout
    and stochastic depth off."""
    from mmseg.registry import MODELS

    from benchmark.checkpoints.mmseg_zoo import convert_mmseg_zoo
    from benchmark.config import ModelSpec
    from experiments.paper_models import PAPER_MODELS
    from methods import build_model

    mmseg()
    cfg = config(SEGFORMER if which == "segformer" else FCN)
    model_cfg = copy.deepcopy(cfg.model)
    for key in ("pretrained", "data_preprocessor"):
        model_cfg.pop(key, None)
    model_cfg.backbone.pop("init_cfg", None)
    _bn(model_cfg)
    model_cfg.decode_head.dropout_ratio = 0.0
    if which == "segformer":  # the zoo's SegFormer head (tests/fidelity/test_models.py) on B0
        model_cfg.backbone.drop_path_rate = 0.0
        spec = ModelSpec(backbone="mit_b0", decoder="mlp_mmseg", decoder_channels=256,
                         init="mmseg")
    else:  # Table 1's FCN baseline
        model_cfg.auxiliary_head.dropout_ratio = 0.0
        spec = next(pm.model for pm in PAPER_MODELS if pm.pair == "fcn")
    torch.manual_seed(seed)
    theirs = MODELS.build(model_cfg)
    _randomise_norms(theirs, seed)
    ours = build_model(spec, NUM_CLASSES, IGNORE)
    ours.load_state_dict(convert_mmseg_zoo(theirs.state_dict(), spec.backbone, spec.decoder),
                         strict=True)
    for model in (ours, theirs):
        for m in model.modules():
            if isinstance(m, torch.nn.modules.dropout._DropoutNd):
                m.p = 0.0
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0
    return ours, theirs, cfg


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Norm layers away from 1 / 0 and BN statistics away from 0 / 1 (fresh modules)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def optimizers(which: str, ours: torch.nn.Module, theirs: torch.nn.Module,
               cfg: Any, fused: bool = False) -> tuple[torch.optim.Optimizer, Any]:
    """The suite's optimizer of the paper recipe and mmengine's optim wrapper of MMSeg's config
    (the same parameter groups: tests/fidelity/test_training.py)."""
    from mmengine.optim import build_optim_wrapper

    from benchmark.config import Cell
    from benchmark.train.optim import build_optimizer
    from experiments.recipes import recipe_for

    train = replace(recipe_for("ade20k", which).train, fused_optimizer=fused)
    cell = Cell(grid="peer", row=which, train=train)
    # mmcv-lite has no compiled ops: "mmcv full" is not available
    with mock.patch("mmengine.optim.optimizer.default_constructor.mmcv_full_available",
                    return_value=False):
        wrapper = build_optim_wrapper(theirs, copy.deepcopy(cfg.optim_wrapper))
    return build_optimizer(ours, cell), wrapper


def samples(labels: torch.Tensor, size: tuple[int, int] | None = None) -> list[Any]:
    """MMSeg's data samples of a batch: ground truth and image metadata."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    out = []
    shape = tuple(size or labels.shape[-2:])
    for label in labels:
        sample = SegDataSample(metainfo={"img_shape": shape, "ori_shape": shape,
                                         "pad_shape": shape, "padding_size": [0, 0, 0, 0]})
        sample.gt_sem_seg = PixelData(data=label[None])
        out.append(sample)
    return out


# ----------------------------------------------------------------------------- training step


def step_fns(which: str, batch: int, size: int, device: torch.device = torch.device("cpu"),
             fused: bool = False) -> tuple[dict[str, Callable], list[float]]:
    """The two training steps on one batch, after checking their first two losses agree;
    returns them and the losses (suite, MMSeg) of the check."""
    from benchmark.train.engine import step_kernels, training_step
    from experiments.recipes import recipe_for

    ours, theirs, cfg = models(which)
    ours.to(device).train()
    theirs.to(device).train()
    optimizer, wrapper = optimizers(which, ours, theirs, cfg, fused)
    gen = torch.Generator().manual_seed(size)
    images = torch.randn(batch, 3, size, size, generator=gen).to(device)
    labels = blocky_labels(batch, size, size, NUM_CLASSES, IGNORE, device)
    data = samples(labels)

    train = recipe_for("ade20k", which).train

    def suite() -> float:  # with the kernels the engine trains with on this device
        with step_kernels(train, device):
            return training_step(ours, optimizer, images, labels, IGNORE,
                                 ce_average="all_pixels").loss.item()

    def peer() -> float:
        loss, _ = theirs.parse_losses(theirs.loss(images, data))
        wrapper.update_params(loss)
        return loss.item()

    losses = []
    for _ in range(2):
        a, b = suite(), peer()
        losses += [a, b]
        if abs(a - b) > LOSS_TOL * max(1.0, abs(b)):
            raise AssertionError(f"{which}: suite loss {a:.7f} vs MMSeg {b:.7f}")
    for group in [*optimizer.param_groups, *wrapper.optimizer.param_groups]:
        group["lr"] = 0.0
    return {"suite": suite, "mmseg": peer}, losses


# ----------------------------------------------------------------------------- inference


def inference_fns(height: int, width: int, slide: bool,
                  device: torch.device = torch.device("cpu")) -> tuple[dict[str, Callable], float]:
    """Whole-image or sliding-window prediction of SegFormer-B0 on one image, as the suite's
    evaluation (`predict_confusion`) and MMSeg's `predict` make it; returns the two and the
    share of pixels where they predict the same class."""
    from benchmark.train.evaluate import predicted_classes, slide_logits, upsample_logits

    ours, theirs, _ = models("segformer")
    ours.to(device).eval()
    theirs.to(device).eval()
    window, stride = (512, 512), (341, 341)
    if slide:
        from mmengine import ConfigDict

        theirs.test_cfg = ConfigDict(mode="slide", crop_size=window, stride=stride)
    image = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height))
    image = image.to(device)
    data = samples(torch.zeros(1, height, width, dtype=torch.long, device=device))

    @torch.no_grad()
    def suite() -> torch.Tensor:
        logits = (slide_logits(ours, image, NUM_CLASSES, window, stride) if slide
                  else ours(image).logits)
        return predicted_classes(upsample_logits(logits, image.shape[-2:], (height, width),
                                                 "via_input"))

    @torch.no_grad()
    def peer() -> torch.Tensor:
        return theirs.predict(image, data)[0].pred_sem_seg.data

    agree = (suite() == peer()).float().mean().item()
    if agree < 0.9999:
        raise AssertionError(f"predictions agree on {agree:.4%} of the pixels only")
    return {"suite": suite, "mmseg": peer}, agree


# ----------------------------------------------------------------------------- data pipeline


class SharedDraws:
    """MMSeg's numpy draws served from the torch RNG that the suite's pipeline draws from
    (benchmark/datasets/mmseg_pipeline.py: TorchDraws), so both make the same samples."""

    def __init__(self) -> None:
        from benchmark.datasets.mmseg_pipeline import TorchDraws

        d = TorchDraws()

        def randint(low: int, high: int | None = None) -> int:
            return d.randint(0, low) if high is None else d.randint(low, high)

        self.patch = {"random_sample": d.random, "randint": randint, "uniform": d.uniform,
                      "choice": lambda options, p: options[0] if d.flip(p[0]) else options[-1]}

    def __enter__(self) -> None:
        self.saved = {k: getattr(np.random, k) for k in self.patch}
        for k, v in self.patch.items():
            setattr(np.random, k, v)

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            setattr(np.random, k, v)


def pipeline_fns(folder: Path, count: int, quick: bool) -> tuple[dict[str, Callable], float]:
    """One pass over `count` generated pairs, item i from seed i, by each side; returns them
    and the largest grey-level difference of the check."""
    from mmcv.transforms import Compose

    from perf.pipeline import datasets, write_split

    pairs = write_split(folder, count, scale=0.25 if quick else 1.0)
    dataset = datasets(pairs, quick)["mmseg"]
    spec_cfg = config("_base_/datasets/ade20k")
    train_pipeline = copy.deepcopy(spec_cfg.train_pipeline)
    if quick:  # the suite's quick recipe: scale 512x128, crop 128
        train_pipeline[2]["scale"] = (512, 128)
        train_pipeline[3]["crop_size"] = (128, 128)
    theirs = Compose(train_pipeline)
    draws = SharedDraws()

    def suite() -> list:
        return [dataset.host_item((i, i)) for i in range(count)]

    def peer() -> list:
        out = []
        with draws:
            for i, p in enumerate(pairs):
                torch.default_generator.manual_seed(i)
                out.append(theirs({"img_path": str(p.image), "seg_map_path": str(p.label),
                                   "seg_fields": [], "reduce_zero_label": True}))
        return out

    worst = 0
    for (image, label, size), packed in zip(suite(), peer()):
        bgr = packed["inputs"]  # MMSeg keeps cv2's BGR until its data preprocessor
        h, w = bgr.shape[-2:]
        if tuple(size.tolist()) != (h, w):
            raise AssertionError(f"sample sizes differ: {tuple(size.tolist())} vs {(h, w)}")
        worst = max(worst, int((image[:h, :w].int() - bgr.flip(0).permute(1, 2, 0).int())
                               .abs().max()))
        if not torch.equal(label[:h, :w].long(), packed["data_samples"].gt_sem_seg.data[0]):
            raise AssertionError("pipeline labels differ")
    if worst > 1:
        raise AssertionError(f"pipeline images differ by {worst} grey levels")
    return {"suite": suite, "mmseg": peer}, worst


# ----------------------------------------------------------------------------- the figure


def _row(stage: str, what: str, t: dict[str, Timings], check: str, target: float,
         per: int = 1) -> list[str]:
    ratio = paired_ratio(t["suite"], t["mmseg"])
    lo, hi = ratio_spread(t["suite"], t["mmseg"])
    times = (f"{per / t['suite'].median:.1f} / {per / t['mmseg'].median:.1f} img/s" if per > 1
             else f"{t['suite'].ms(0)} / {t['mmseg'].ms(0)} ms")
    return [stage, what, times, f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]", check, f"<= {target:.2f}",
            verdict(ratio, target)]


def run(quick: bool = False, device: torch.device | None = None) -> Report:
    """Suite vs MMSegmentation 1.2.2: training step, pipeline, inference (time ratios)."""
    import cv2

    warmup, repeats = (1, 3) if quick else (2, 10)
    device = device or torch.device("cpu")
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    # on a GPU cuDNN allows TF32 by default and cuBLAS does not: MMSeg's MiT feed-forward
    # layers are 1x1 convolutions where the suite's are linear layers, so they would round
    # differently; both sides run full fp32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    try:
        for s in (QUICK_STEP_SETUPS if quick else STEP_SETUPS):
            if s.fused and device.type == "cpu":
                continue
            fns, losses = step_fns(s.model, s.batch, s.size, device, s.fused)
            t = alternate(fns, repeats, warmup, device)
            check = (f"losses {losses[0]:.5f}, {losses[2]:.5f}; differ by "
                     f"{max(abs(losses[0] - losses[1]), abs(losses[2] - losses[3])):.0e}")
            rows.append(_row("training step", s.label, t, check, TARGETS["step"]))
            del fns
        count = 4 if quick else 16
        with tempfile.TemporaryDirectory() as tmp:
            fns, worst = pipeline_fns(Path(tmp), count, quick)
            t = alternate(fns, repeats, warmup)
        rows.append(_row("training pipeline", f"ADE20K FCN recipe, decode included, {count} "
                         f"JPEG/PNG pairs (a worker's items)", t,
                         f"images within {worst} grey level(s), labels equal",
                         TARGETS["pipeline"], per=count))
        for stage, what, h, w, slide in _views(quick):
            fns, agree = inference_fns(h, w, slide, device)
            t = alternate(fns, repeats, warmup, device)
            rows.append(_row(stage, what, t, f"predictions equal on {agree:.4%} of pixels",
                             TARGETS["inference"]))
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    headers = ["Stage", "Model, input", "Suite / MMSeg", "Ratio [IQR]", "Checked first",
               "Target", "Verdict"]
    return Report("peer", "Peer: the suite vs MMSegmentation 1.2.2", [Table(headers, rows)],
                  _notes(device, warmup, repeats))


def _views(quick: bool) -> list[tuple[str, str, int, int, bool]]:
    """The inference rows: (stage, what, height, width, sliding)."""
    if quick:
        return [("whole-image inference", "SegFormer-B0, 1x128x171", 128, 171, False),
                ("sliding inference", "SegFormer-B0, crop 512 stride 341, 1x512x700", 512, 700,
                 True)]
    return [("whole-image inference", "SegFormer-B0, 1x512x683", 512, 683, False),
            ("sliding inference", "SegFormer-B0, crop 512, stride 341, 1x512x1024", 512, 1024,
             True)]


def _notes(device: torch.device, warmup: int, repeats: int) -> list[str]:
    """How the figure was measured, under its table."""
    return [f"{device} (the pipeline on the CPU), one process, 1 torch thread and 1 OpenCV "
            f"thread; the two sides alternate, "
            f"{repeats} rounds after {warmup} warm-up call(s) each; ratio = median over rounds "
            f"of suite time / MMSeg time (below 1: the suite is faster)"
            + ("; TF32 off on both sides (full fp32 convolutions and matmuls)"
               if device.type == "cuda" else ""),
            "same model, same weights: MMSeg builds from its config (SyncBN -> BN), the suite "
            "loads MMSeg's random weights through benchmark/checkpoints; dropout and "
            "stochastic depth off on both sides; steps timed with every learning rate 0",
            "training step: forward, loss (MMSeg: its decode-head losses, accuracy and "
            "parse_losses), backward, optimizer step (MMSeg: mmengine's OptimWrapper built from "
            "the config); inputs already normalised on both sides; SGD: the suite runs torch's "
            "fused kernel on the CPU, MMSeg torch's default for-loop (the same update but for "
            "float rounding in each tensor's last numel % 16 elements); on a GPU the fused "
            "row takes it with train.fused_optimizer, MMSeg unchanged",
            "pipeline: a DataLoader worker's items, decode included; the suite's uint8 "
            "samples (normalised and padded on the device, benchmark/datasets/staging.py) vs "
            "MMSeg's train_pipeline up to PackSegInputs (its SegDataPreProcessor also runs on "
            "the device); both sides draw the same random numbers",
            "inference: the suite's evaluation forward, logits resized via the input "
            "(eval.logit_resize=via_input), argmax (on the CPU as max(1).indices, the same "
            "index); MMSeg's `predict` (whole / slide test_cfg)"]


if __name__ == "__main__":
    raise SystemExit(standalone("peer", run))
