"""Training and evaluation settings against their sources (issue 13 items 4-7, docs/fidelity.md):
each recipe against the MMSegmentation 1.2.2 config it names, the learning rate against
mmengine's schedulers, every paper model's per-parameter (lr, weight decay) against mmengine's
optimizer constructor, the loss against MMSeg's CrossEntropyLoss, the whole-image resize against
MMSeg's postprocess. The oracle packages come from the `fidelity` extra (conftest.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmark.config import Cell, ModelSpec
from benchmark.train.evaluate import confusion_matrix, predict_confusion, upsample_logits
from benchmark.train.optim import rescale_aux_loss, seg_cross_entropy
from benchmark.train.optim import CUSTOM_KEYS, build_optimizer
from benchmark.train.optim import lr_at
from experiments import get_grid
from experiments.recipes import RECIPES, Recipe
from methods import build_model
from training_helpers import (HEAD_PREFIX, backbone_name_map, mmengine_lrs, mmengine_settings,
                              source_config, suite_settings)

MMSEG_RECIPES = [name for name, r in RECIPES.items() if r.mmseg_config]
IGNORE = 255


def _settings_source(recipe: Recipe) -> str:
    """The config of the recipe's data, batch and evaluation: an adaptation may name another."""
    found = re.search(r"mmseg:(\S+)", recipe.adaptation)
    return found[1] if found else recipe.mmseg_config


@pytest.mark.parametrize("name", MMSEG_RECIPES)
def test_recipe_follows_its_mmseg_config(mmseg, name: str) -> None:
    recipe = RECIPES[name]
    cfg = source_config(mmseg, recipe.mmseg_config)
    t, opt = recipe.train, cfg.optim_wrapper.optimizer
    assert (opt.type.lower(), opt.lr, opt.weight_decay) == (t.optimizer, t.lr, t.weight_decay)
    assert opt.get("momentum", t.momentum) == t.momentum
    assert tuple(opt.get("betas", (0.9, 0.999))) == (0.9, 0.999)  # torch AdamW's defaults
    assert (cfg.optim_wrapper.type == "AmpOptimWrapper") == t.amp  # fp32 unless the source's AMP
    keys = cfg.optim_wrapper.get("paramwise_cfg", {}).get("custom_keys", {})
    assert {k: (v.get("lr_mult", 1.0), v.get("decay_mult", 1.0)) for k, v in keys.items()} \
        == CUSTOM_KEYS[t.param_groups]
    model = cfg.model
    for head in (model.decode_head, model.get("auxiliary_head")):
        if head is not None:  # CrossEntropyLoss's default avg_non_ignore=False: all pixels
            assert not head.loss_decode.get("avg_non_ignore", False)
            assert t.ce_average == "all_pixels" and not head.align_corners
    if t.iters != cfg.train_cfg.max_iters:
        assert t.iters == 80_000 and "80K iterations" in recipe.adaptation
    data = source_config(mmseg, _settings_source(recipe))
    gpus, per_gpu = map(int, re.search(r"_(\d+)xb(\d+)-", _settings_source(recipe)).groups())
    assert (recipe.gpus, recipe.per_gpu_batch, t.batch_size) == (gpus, per_gpu, gpus * per_gpu)
    assert recipe.crop == tuple(data.crop_size)
    test_cfg = data.model.test_cfg
    assert recipe.eval.mode == test_cfg.mode and recipe.eval.logit_resize == "via_input"
    if test_cfg.mode == "slide":
        e = recipe.eval
        assert ((e.window_h, e.window_w), (e.stride_h, e.stride_w)) == (
            tuple(test_cfg.crop_size), tuple(test_cfg.stride))


STEPS = (0, 1, 2, 750, 1498, 1499, 1500, 1501, 40_000, 79_998, 79_999, 80_000, 159_998, 159_999)


@pytest.mark.parametrize("name", MMSEG_RECIPES)
def test_learning_rate_equals_mmengine_schedulers(mmseg, name: str) -> None:
    recipe = RECIPES[name]
    cfg, t = source_config(mmseg, recipe.mmseg_config), recipe.train
    schedulers = [dict(s) for s in cfg.param_scheduler]
    assert schedulers[-1]["end"] == cfg.train_cfg.max_iters
    schedulers[-1]["end"] = t.iters  # COCO-Stuff: the 80K adaptation (checked above)
    at = tuple(s for s in STEPS if s < t.iters)
    bases = (t.lr, t.lr * 10)  # one group at the recipe's lr, one at SegFormer's head lr
    theirs = mmengine_lrs(schedulers, bases, t.iters, at)
    for step in at:
        ours = [lr_at(step, base, t) for base in bases]
        assert ours == pytest.approx(theirs[step], rel=1e-9, abs=1e-18), step
    if t.optimizer == "sgd":
        assert theirs[t.iters - 1][0] == pytest.approx(1e-4)  # the floor, not 2.1e-7


def test_protoseg_recipe_schedule_equals_the_released_lambda_poly() -> None:
    """openseg's `lambda_poly`: LambdaLR(lambda iters: (1 - iters / max_iters) ** 0.9), stepped
    with the iteration before each step (segmentor/trainer.py)."""
    t = RECIPES["cityscapes_hrnet_80k"].train
    p = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([p], lr=t.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda iters: pow((1.0 - iters / t.iters), 0.9))
    for step in (0, 1, 1500, 40_000, 79_999):
        with pytest.warns(UserWarning):  # torch deprecates step(epoch), as openseg calls it
            scheduler.step(step)
        assert lr_at(step, t.lr, t) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-12)


# the MMSeg config whose backbone has each paper backbone's names
BACKBONE_CONFIGS = {"resnet101_d8": "fcn/fcn_r101-d8_4xb4-160k_ade20k-512x512",
                    "hrnetv2_w48": "hrnet/fcn_hr48_4xb4-160k_ade20k-512x512",
                    "swin_b": "swin/swin-base-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k"
                              "-512x512",
                    "mit_b4": "segformer/segformer_mit-b4_8xb2-160k_ade20k-512x512",
                    "mit_b2": "segformer/segformer_mit-b2_8xb2-160k_ade20k-512x512"}
PAPER_CELLS = {f"{c.grid}:{c.row}": c for g in ("table1", "ablation_loss")
               for c in get_grid(g).cells
               if c.tag == "baseline" or c.pair in ("swin", "segformer")}


@pytest.mark.parametrize("which", list(PAPER_CELLS))
def test_parameter_groups_equal_mmengine_constructor(mmseg, which: str) -> None:
    """Every parameter's (lr, weight decay) equals what mmengine's constructor gives the same
    parameter under MMSeg's name, with the recipe source's `optim_wrapper` (paramwise_cfg)."""
    cell = PAPER_CELLS[which]
    recipe = RECIPES[cell.train.recipe]
    model = build_model(cell.model, 150)
    ours = suite_settings(build_optimizer(model, cell), model)
    theirs_model = mmseg.build(mmseg.model_cfg(BACKBONE_CONFIGS[cell.model.backbone]))
    for name, _ in theirs_model.named_parameters():  # MMSeg's heads: ConvModule norms are `bn`
        if not name.startswith("backbone."):
            assert not any(k in name for k in ("norm", "pos_block", "pos_embed", "position"))
    names = backbone_name_map(theirs_model.backbone, cell.model.backbone)
    backbone = [n for n in ours if n.startswith("backbone.")]
    assert sorted(names) == sorted(backbone)  # every suite backbone tensor has MMSeg sources
    mm_backbone = [f"backbone.{n}" for n, _ in theirs_model.backbone.named_parameters()]
    assert {f"backbone.{m}" for sources in names.values() for m in sources} == set(mm_backbone)
    heads = {n: f"{HEAD_PREFIX[n.split('.')[0]]}.{n.split('.', 1)[1]}" for n in ours
             if not n.startswith("backbone.")}
    theirs = mmengine_settings(source_config(mmseg, recipe.mmseg_config).optim_wrapper,
                               mm_backbone + list(heads.values()))
    for name, setting in ours.items():
        sources = ([f"backbone.{m}" for m in names[name]] if name in names else [heads[name]])
        assert {theirs[s] for s in sources} == {setting}, name
    if cell.train.param_groups != "decay_all":
        assert len(set(ours.values())) >= 2  # the rules did split the parameters


def _ce_loss(mmseg, avg_non_ignore: bool, weight: float = 1.0) -> nn.Module:
    """MMSeg's CrossEntropyLoss (its warning about the avg_non_ignore default silenced)."""
    import warnings

    from mmseg.models.losses import CrossEntropyLoss

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)

        return CrossEntropyLoss(loss_weight=weight, avg_non_ignore=avg_non_ignore)


def test_loss_equals_mmseg_cross_entropy(mmseg) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 7, 33, 45, generator=g)
    labels = torch.randint(0, 7, (2, 33, 45), generator=g)
    labels[torch.rand(2, 33, 45, generator=g) < 0.4] = IGNORE
    theirs = {}
    for average, avg_non_ignore in (("all_pixels", False), ("labelled", True)):
        theirs[average] = _ce_loss(mmseg, avg_non_ignore)(logits, labels, ignore_index=IGNORE)
        ours = seg_cross_entropy(logits, labels, IGNORE, average)
        assert ours.item() == pytest.approx(theirs[average].item(), rel=1e-6), average
    assert theirs["labelled"] > 1.5 * theirs["all_pixels"]  # 40% ignored: x1/0.6


class _FixedLogits(nn.Module):
    """A "model" whose head logits are its one parameter: the engine's step then runs only its
    own loss path (upsampling to the labels, cross-entropy, backward)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, images: torch.Tensor, labels: torch.Tensor):
        from methods.heads.base import HeadOutput

        return HeadOutput(logits=self.logits, losses={}, state={})


# the swap's matmul forward and torch's loss; torch's forward and the fused loss (3.5M logits)
@pytest.mark.parametrize("low", [(16, 24), (80, 72)])
def test_engine_cpu_step_loss_and_gradient_equal_mmsegs(mmseg, low) -> None:
    """The engine's CPU training step (its kernels: upsampling with a matmul backward and the
    fused cross-entropy, benchmark/train/engine.py step_kernels) gives head logits the loss and
    gradient that MMSeg's decode head gives them (its `resize` to the labels, then
    CrossEntropyLoss)."""
    from methods.cross_entropy import fuses

    assert fuses(torch.empty(2, 19, 4 * low[0], 4 * low[1], device="meta")) == (low[0] > 16)
    from mmseg.models.utils import resize

    from benchmark.config import TrainSpec
    from benchmark.train.engine import step_kernels, training_step

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 19, *low, generator=g)
    labels = torch.randint(0, 19, (2, 4 * low[0], 4 * low[1]), generator=g)
    labels[torch.rand(labels.shape, generator=g) < 0.2] = IGNORE
    model = _FixedLogits(logits)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    with step_kernels(TrainSpec(), torch.device("cpu")):
        step = training_step(model, optimizer, torch.zeros(2, 3, 1, 1), labels, IGNORE,
                             ce_average="all_pixels")
    theirs_logits = logits.clone().requires_grad_(True)
    up = resize(theirs_logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    theirs = _ce_loss(mmseg, False)(up, labels, ignore_index=IGNORE)
    theirs.backward()
    assert step.loss.item() == pytest.approx(theirs.item(), rel=1e-6)
    torch.testing.assert_close(model.logits.grad, theirs_logits.grad, rtol=1e-5, atol=1e-9)


def test_auxiliary_loss_equals_mmseg_with_weight_04(mmseg) -> None:
    """The auxiliary head's term (weight 0.4, methods/segmentor.py) brought to all pixels equals
    MMSeg's auxiliary CrossEntropyLoss(loss_weight=0.4) on the same upsampled logits."""
    from mmseg.models.utils import resize

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="resnet18_d8", decoder="fcn", decoder_channels=16,
                                  aux_weight=0.4), 5).train()
    for m in model.modules():
        if isinstance(m, nn.Dropout2d):
            m.eval()  # the same aux logits in both computations
    x = torch.randn(2, 3, 40, 56, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 5, (2, 40, 56), generator=torch.Generator().manual_seed(2))
    labels[:, :10] = IGNORE
    with torch.no_grad():
        out = model(x, labels)
        rescale_aux_loss(out.losses, labels, IGNORE, "all_pixels")
        aux_logits = resize(model.aux(model.backbone(x)[-2]), size=(40, 56), mode="bilinear",
                            align_corners=False)
        theirs = _ce_loss(mmseg, False, 0.4)(aux_logits, labels, ignore_index=IGNORE)
    assert out.losses["aux"].item() == pytest.approx(theirs.item(), rel=1e-5)


def _mmseg_whole_postprocess(logits: torch.Tensor, input_size, ori_size) -> torch.Tensor:
    """MMSeg's whole inference after the head: predict_by_feat to the input (img_shape), then
    postprocess_result to the original size (ori_shape)."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    from mmseg.models.segmentors.base import BaseSegmentor
    from mmseg.structures import SegDataSample

    head = SimpleNamespace(align_corners=False)
    seg_logits = BaseDecodeHead.predict_by_feat(head, logits, [{"img_shape": input_size}])
    samples = [SegDataSample(metainfo={"ori_shape": ori_size, "img_shape": input_size})
               for _ in range(len(logits))]
    segmentor = SimpleNamespace(align_corners=False, decode_head=head)
    done = BaseSegmentor.postprocess_result(segmentor, seg_logits, samples)
    return torch.stack([s.seg_logits.data for s in done])


@pytest.mark.parametrize("input_size, ori_size", [((512, 683), (375, 500)),
                                                  ((512, 512), (512, 512)),
                                                  ((1024, 2048), (1024, 2048))])
def test_whole_image_resize_equals_mmseg_postprocess(mmseg, input_size, ori_size) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, (input_size[0] + 7) // 8, (input_size[1] + 7) // 8, generator=g)
    theirs = _mmseg_whole_postprocess(logits, input_size, ori_size)
    ours = upsample_logits(logits, input_size, ori_size, "via_input")
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    direct = upsample_logits(logits, input_size, ori_size, "direct")
    if input_size != ori_size:  # resizing once changes some pixels' classes
        assert (direct.argmax(1) != theirs.argmax(1)).any()


def test_predict_confusion_via_input_equals_mmseg_predictions(mmseg) -> None:
    """The evaluation loop with eval.logit_resize=via_input: the confusion matrix of MMSeg's
    predictions (network input 64x85, labels 47x63)."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 11, generator=g)
    labels = torch.randint(0, 4, (2, 47, 63), generator=g)

    class Fixed(nn.Module):
        def forward(self, images: torch.Tensor) -> SimpleNamespace:
            return SimpleNamespace(logits=logits[images[:, 0, 0, 0].long()])

    images = torch.zeros(2, 3, 64, 85)
    images[1] = 1.0  # which image's logits
    data = list(zip(images, labels))
    cm = predict_confusion(Fixed(), data, 4, IGNORE, batch_size=2, progress=False,
                           logit_resize="via_input")
    theirs = _mmseg_whole_postprocess(logits, (64, 85), (47, 63)).argmax(1)
    assert torch.equal(cm, confusion_matrix(theirs, labels, 4, IGNORE))
    assert Cell("g", "x").eval.logit_resize == "direct"  # other grids keep their results


def test_every_paper_recipe_names_its_source() -> None:
    """Sources are MMSeg configs (checked against the package above) or, for the Cityscapes
    HRNet pair only, the released ProtoSeg config; each pair's cells carry their model's recipe."""
    from experiments.recipes import recipe_for

    for recipe in RECIPES.values():
        kind, _, path = recipe.source.partition(":")
        assert kind in ("mmseg", "protoseg") and path, recipe.name
        assert (kind == "protoseg") == (recipe.name == "cityscapes_hrnet_80k")
    for grid, data in (("table1", "ade20k"), ("table2", "cityscapes"), ("table3", "coco_stuff10k")):
        for cell in get_grid(grid).cells:
            if cell.pair:
                assert cell.train.recipe == recipe_for(data, cell.pair).name
    with pytest.raises(KeyError, match="paper model"):
        recipe_for("ade20k", "cnn")
