"""Figures: each plotting function writes a non-empty PNG (and PDF) of the expected pixel size;
the similarity maps and the projection use the head's real prototypes."""

from __future__ import annotations

import copy

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F

from benchmark.report import figures, plots
from benchmark.config import Cell, DataSpec, HeadSpec, ModelSpec, TrainSpec
from benchmark.checkpoints import weights_sha256
from benchmark.report.aggregate import per_class_iou
from benchmark.store import Record, ResultsLayout
from methods import build_model
from methods.heads.base import l2_normalize

DATA = DataSpec(num_classes=4, image_size=32, modes_per_class=2, train_images=4, val_images=2)
TRAIN = TrainSpec(iters=4, batch_size=2)


def tiny_spec(head: str = "prototype") -> ModelSpec:
    spec = HeadSpec(name=head, num_prototypes=3) if head == "prototype" else HeadSpec(name=head)
    return ModelSpec(backbone="mit_b0", decoder="mlp", decoder_channels=32, head=spec)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_spec(), num_classes=4).eval()


@pytest.fixture(scope="module")
def softmax():
    torch.manual_seed(0)
    return build_model(tiny_spec("softmax"), num_classes=4).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=g)
    labels = torch.randint(0, 4, (2, 32, 32), generator=g)
    labels[:, :4] = 255  # an unlabelled band
    return images, labels


def assert_png(path, size_in) -> None:
    assert path.suffix == ".png" and path.stat().st_size > 1000
    height, width = mpimg.imread(path).shape[:2]
    assert (width, height) == plots.figure_size_px(size_in)
    pdf = path.with_suffix(".pdf")
    assert pdf.read_bytes().startswith(b"%PDF")


# --------------------------------------------------------------------------- record-based

BASE = Cell(grid="g", row="Softmax", column="MiT-B0", tag="baseline", pair="b0", data=DATA,
            model=tiny_spec("softmax"), train=TRAIN)
OURS = Cell(grid="g", row="Ours", column="MiT-B0", tag="ours", pair="b0", data=DATA,
            model=tiny_spec(), train=TRAIN)


def run_record(cell: Cell, seed: int, miou: float, val: bool = False) -> Record:
    history = [{"step": s, "loss": 2.0 / (s + 1), "ce": 1.5 / (s + 1), "lr": 0.01}
               for s in range(0, 40, 10)]
    if val:
        history[1]["val_miou"], history[3]["val_miou"] = miou - 10, miou - 1
    return Record(status="done", grid=cell.grid, cell_key=cell.key, seed=seed, history=history,
                  metrics={"miou": miou,
                           "per_class_iou": {f"class{i}": miou + i for i in range(4)}})


def test_per_class_iou_figure(tmp_path):
    records = [run_record(BASE, 0, 50.0), run_record(BASE, 1, 52.0), run_record(OURS, 0, 60.0)]
    mean, std = per_class_iou([BASE, OURS], records)
    paths = plots.plot_per_class_iou(mean, tmp_path / "sub" / "per_class", std)
    assert [p.name for p in paths] == ["per_class.png", "per_class.pdf"]
    assert_png(paths[0], plots.BAR_SIZE_IN)
    with pytest.raises(ValueError, match="no classes or no methods"):
        plots.plot_per_class_iou(mean.iloc[:0], tmp_path / "empty")


def test_training_curves_figure(tmp_path):
    records = [run_record(BASE, 0, 50.0), run_record(OURS, 0, 60.0, val=True)]
    series = plots.curve_series([BASE, OURS], records)
    assert [(s[0], s[1], s[3], s[4]) for s in series] == [("Softmax", 0, 50.0, 30),
                                                          ("Ours", 0, 60.0, 30)]
    paths = plots.plot_training_curves([BASE, OURS], records, tmp_path / "curves")
    assert_png(paths[0], plots.CURVES_SIZE_IN)
    with pytest.raises(ValueError, match="no finished runs"):
        plots.plot_training_curves([BASE, OURS], [], tmp_path / "none")


# --------------------------------------------------------------------------- model-based


def test_similarity_maps_use_the_heads_prototypes(model, batch):
    images, _ = batch
    head = model.head
    with torch.no_grad():
        emb = head.embed(model.decoder(model.backbone(images)))  # not through forward()
    expected = torch.einsum("bdhw,kd->bkhw", emb, l2_normalize(head.prototypes[2]))
    expected = F.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)
    maps = plots.similarity_maps(model, images, 2)
    assert maps.shape == (2, 3, 32, 32)
    torch.testing.assert_close(maps, expected)
    assert maps.abs().max() <= 1.0 + 1e-5

    # change the buffer: the maps follow it (prototype 0 := pixel (0, 0)'s embedding -> 1 there)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.prototypes[2, 0] = emb[0, :, 0, 0]
        other.head.prototypes[2, 1] = -other.head.prototypes[2, 1]
    small = F.interpolate(plots.similarity_maps(other, images, 2), size=emb.shape[-2:],
                          mode="bilinear", align_corners=False)
    changed = plots.similarity_maps(other, images, 2)
    assert not torch.allclose(changed[:, 0], maps[:, 0])
    torch.testing.assert_close(changed[:, 1], -maps[:, 1])
    torch.testing.assert_close(changed[:, 2], maps[:, 2])
    direct = torch.einsum("bdhw,d->bhw", emb, l2_normalize(emb[0, :, 0, 0], dim=0))
    assert direct[0, 0, 0] == pytest.approx(1.0, abs=1e-5)
    assert small.shape[-2:] == emb.shape[-2:]
    assert model.training is False and other.training is False


def test_similarity_maps_reject_bad_input(model, softmax, batch):
    images, _ = batch
    with pytest.raises(ValueError, match=r"class_index 4 is outside \[0, 4\)"):
        plots.similarity_maps(model, images, 4)
    with pytest.raises(ValueError, match="need a prototype head, got SoftmaxHead"):
        plots.similarity_maps(softmax, images, 0)


def test_similarity_figure_size(model, batch, tmp_path):
    images, labels = batch
    model.train()  # the plot must not leave the model in eval mode when it was training
    paths = plots.plot_similarity_maps(model, images[0], 1, tmp_path / "sim", class_name="car",
                                       label=labels[0])
    assert model.training
    model.eval()
    assert plots.similarity_grid_shape(3) == (1, 4)
    assert plots.similarity_grid_shape(10) == (2, 6)
    assert_png(paths[0], plots.similarity_figure_size_in(3))


def test_projection_places_prototypes_in_the_pixels_frame(model, batch):
    images, labels = batch
    other = copy.deepcopy(model)
    with torch.no_grad():
        emb = other(images).state["embeddings"]
        other.head.prototypes[1, 2] = emb[0, :, 4, 4]  # a labelled pixel's embedding
    points, classes, protos = plots.embedding_projection(other, images, labels, max_points=10_000)
    n_labelled = (F.interpolate(labels[:, None].float(), size=emb.shape[-2:], mode="nearest")
                  != 255).sum().item()
    assert points.shape == (n_labelled, 2) and classes.shape == (n_labelled,)
    assert protos.shape == (4, 3, 2)
    assert int(classes.max()) < 4
    # the prototype equal to a pixel's embedding lands exactly on that pixel's point
    assert torch.cdist(protos[1, 2][None], points).min() < 1e-4
    sub, sub_classes, _ = plots.embedding_projection(other, images, labels, max_points=20)
    assert sub.shape == (20, 2) and sub_classes.shape == (20,)
    with pytest.raises(ValueError, match="unknown projection 'umap'"):
        plots.embedding_projection(other, images, labels, method="umap")


def test_embedding_figures_for_prototype_and_softmax_heads(model, softmax, batch, tmp_path):
    images, labels = batch
    paths = plots.plot_embedding_projection(model, images, labels, tmp_path / "proto",
                                            class_names=["a", "b", "c", "d"])
    assert_png(paths[0], plots.PROJECTION_SIZE_IN)
    points, _, protos = plots.embedding_projection(softmax, images, labels)
    assert protos.shape == (4, 1, 2)  # one classifier vector per class
    assert_png(plots.plot_embedding_projection(softmax, images, labels, tmp_path / "soft")[0],
               plots.PROJECTION_SIZE_IN)


def test_which_heads_have_figures_is_asked_of_their_hooks():
    """(class vectors, prototypes) from each head's figure hooks, no list of head names."""
    assert plots.head_figure_vectors("prototype") == (True, True)
    assert plots.head_figure_vectors("softmax") == (True, False)
    assert plots.head_figure_vectors("pixel_contrast") == (True, False)  # the softmax classifier
    assert plots.head_figure_vectors("pixel_query") == (False, False)  # no fixed class vectors


# --------------------------------------------------------------------------- a grid's figures


def test_render_figures_with_and_without_weights(tmp_path, model):
    records = [run_record(BASE, 0, 50.0), run_record(OURS, 0, 60.0)]
    notes: list[str] = []
    paths = figures.render_figures("g", [BASE, OURS], records, ResultsLayout(tmp_path),
                                   log=notes.append)
    out = tmp_path / "figures" / "g"
    assert sorted(p.name for p in paths) == ["per_class_iou_b0.pdf", "per_class_iou_b0.png",
                                             "training_curves.pdf", "training_curves.png"]
    assert all(p.parent == out for p in paths)
    assert notes.pop().startswith("figures: skipping the mode alignment of 'Ours': no weights at")
    assert notes.pop() == ("figures: skipping prototype_health: no finished run recorded "
                           "prototype health")  # these records predate it
    assert len(notes) == 2 and all("no weights at" in n for n in notes)

    weights = ResultsLayout(tmp_path).final_weights(OURS.grid, OURS.key, 0)
    weights.parent.mkdir(parents=True)
    trained = build_model(OURS.model, 4)
    torch.save(trained.state_dict(), weights)
    notes.clear()
    paths = figures.render_figures("g", [BASE, OURS], records, ResultsLayout(tmp_path),
                                   log=notes.append)
    names = {p.name for p in paths}
    assert f"similarity_{OURS.key}_seed0.png" in names
    assert f"embedding_{OURS.key}_seed0.png" in names
    assert_png(out / f"similarity_{OURS.key}_seed0.png", plots.similarity_figure_size_in(3))
    assert "mode_alignment.png" in names  # generated data: its prototypes vs the modes
    assert notes.pop().startswith("mode alignment Ours: mean U = ")
    assert notes.pop().startswith("figures: skipping prototype_health")
    assert len(notes) == 1 and "'Softmax'" in notes[0]

    records[1].weights_sha256 = "0" * 64  # the record says other weights were trained
    notes.clear()
    assert plots.model_figures([BASE, OURS], records, ResultsLayout(tmp_path), out, log=notes.append) == []
    assert "does not match its record's weights_sha256" in notes[1]
    notes.clear()
    from benchmark.report.mode_alignment import plot_mode_alignment

    assert plot_mode_alignment([BASE, OURS], records, ResultsLayout(tmp_path), out, log=notes.append) == []
    assert notes == [f"figures: skipping the mode alignment of 'Ours': {weights} does not match "
                     "its record's weights_sha256; rerun the cell with --force to regenerate both"]
    with pytest.raises(plots.StaleWeightsError):
        plots.load_trained_model(OURS, weights, "0" * 64)
    assert plots.load_trained_model(OURS, weights, weights_sha256(trained)) is not None
