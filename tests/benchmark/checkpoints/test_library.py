"""Local checkpoints in the libraries' formats: torchvision, timm and Hugging Face files restore
the backbone's weights; a missing, unreadable, foreign or partial file gives the documented
one-line error."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from benchmark.config import ModelSpec
from benchmark.checkpoints import PretrainedError, load_pretrained
from methods import build_model


def model(backbone: str, decoder: str = "mlp"):
    torch.manual_seed(0)
    return build_model(ModelSpec(backbone=backbone, decoder=decoder, decoder_channels=16), 3)


def test_torchvision_checkpoint_in_a_container_with_prefix(tmp_path) -> None:
    source = torchvision.models.resnet18()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "r18.pth")
    target = model("resnet18_d8", "fcn")
    report = load_pretrained(target, tmp_path / "r18.pth")
    assert torch.equal(target.backbone.body.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert torch.equal(target.backbone.body.bn1.running_var, source.bn1.running_var)
    assert report.prefix == "module." and report.missing == [] and report.mismatched == []
    assert report.unexpected == [] and sorted(report.ignored) == ["body.fc.bias", "body.fc.weight"]
    assert report.loaded == report.expected == 100
    assert "loaded 100/100 tensors" in report.summary()
    assert f"sha256 {report.sha256[:12]}" in report.summary() and len(report.sha256) == 64


def test_timm_safetensors_checkpoint_restores_hrnet(tmp_path) -> None:
    import timm

    source = timm.create_model("hrnet_w18_small_v2")  # the classification model, as released
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    target = model("hrnetv2_w18_small", "hrnetv2")
    report = load_pretrained(target, tmp_path / "model.safetensors")
    assert torch.equal(target.backbone.body.stage4[0].branches[3][0].conv1.weight,
                       source.stage4[0].branches[3][0].conv1.weight)
    assert report.missing == [] and report.unexpected == []
    assert any(k.startswith("body.classifier") for k in report.ignored)


def test_hugging_face_folder_restores_mit(tmp_path) -> None:
    from transformers import SegformerConfig, SegformerForImageClassification

    config = SegformerConfig(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2],
                             num_attention_heads=[1, 2, 5, 8])
    torch.manual_seed(1)
    source = SegformerForImageClassification(config)
    source.save_pretrained(tmp_path / "mit-b0")  # legacy key names, `segformer.` prefix
    target = model("mit_b0")
    before = target.backbone.body.state_dict()["stages.3.blocks.1.mlp.fc2.weight"].clone()
    report = load_pretrained(target, tmp_path / "mit-b0")
    after = target.backbone.body.state_dict()["stages.3.blocks.1.mlp.fc2.weight"]
    assert not torch.equal(before, after)
    assert torch.equal(after, source.segformer.state_dict()["stages.3.blocks.1.mlp.fc2.weight"])
    assert report.missing == [] and report.format == "huggingface"
    assert set(report.ignored) == {"classifier.weight", "classifier.bias"}


def test_shape_mismatch_or_partial_file_is_refused_before_anything_loads(tmp_path) -> None:
    state = torchvision.models.resnet18().state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(2, 2, 3, 3)
    torch.save(state, tmp_path / "r18.pth")
    target = model("resnet18_d8", "fcn")
    kept = target.backbone.body.layer3[0].conv1.weight.clone()
    with pytest.raises(PretrainedError, match=r"wrong shape: body.layer1.0.conv1.weight "
                                              r"\(2, 2, 3, 3\) vs \(64, 64, 3, 3\)"):
        load_pretrained(target, tmp_path / "r18.pth")
    assert torch.equal(target.backbone.body.layer3[0].conv1.weight, kept)
    state = torchvision.models.resnet18().state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith(("conv1", "bn1"))},
               tmp_path / "partial.pth")
    with pytest.raises(PretrainedError) as err:
        load_pretrained(target, tmp_path / "partial.pth")
    assert "leaves 5 of 100 tensors random: body.conv1 (1 tensor), body.bn1 (4 tensors)" in (
        str(err.value)) and "\n" not in str(err.value)


def test_missing_file_names_the_expected_checkpoint(tmp_path) -> None:
    with pytest.raises(PretrainedError) as err:
        load_pretrained(model("resnet18_d8", "fcn"), tmp_path / "nope.pth")
    message = str(err.value)
    assert message.startswith(f"model.pretrained: no checkpoint at {tmp_path / 'nope.pth'}")
    assert "resnet18-f37072fd.pth" in message and "\n" not in message
    (tmp_path / "ckpts").mkdir()
    with pytest.raises(PretrainedError) as err:
        load_pretrained(model("mit_b0"), tmp_path / "ckpts")
    assert str(err.value).startswith(f"model.pretrained: no checkpoint at "
                                     f"{tmp_path / 'ckpts' / 'mit-b0'}; expected mit-b0 "
                                     f"(Hugging Face nvidia/mit-b0 folder")


def test_a_folder_of_checkpoints_serves_each_backbone_its_file(tmp_path) -> None:
    source = torchvision.models.resnet18()
    torch.save(source.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    target = model("resnet18_d8", "fcn")
    report = load_pretrained(target, tmp_path)
    assert report.path == str(tmp_path / "resnet18-f37072fd.pth")
    assert torch.equal(target.backbone.body.conv1.weight, source.conv1.weight)


def test_wrong_or_unreadable_file_is_rejected(tmp_path) -> None:
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(PretrainedError, match=r"leaves \d+ of \d+ tensors random.*nvidia/mit-b0"):
        load_pretrained(model("mit_b0"), tmp_path / "r18.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(PretrainedError, match=r"cannot read .*junk.pth as a torch or safetensors"):
        load_pretrained(model("resnet18_d8", "fcn"), tmp_path / "junk.pth")
