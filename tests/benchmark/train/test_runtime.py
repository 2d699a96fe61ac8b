"""train.compile, train.channels_last, train.deterministic (benchmark/train/engine.py).

Compiled runs use the "aot_eager" backend: the same dynamo graphs and autograd as inductor
without generating C++, which takes minutes per model on a 2-core machine. Tolerances: a
compiled or channels-last step reorders float sums, so losses agree to 1e-4 relative, not
bitwise; resume of a compiled run is bitwise (the same kernels run in both)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import benchmark.train.engine as runtime
from benchmark.overrides import apply_overrides
from benchmark.train import checkpoint
from benchmark.train.engine import train_and_evaluate
from benchmark.train.evaluate import predict_confusion
from benchmark.stops import Interrupted
from experiments.smoke import smoke
from methods import build_model

ROOT = Path(__file__).resolve().parents[3]

TINY = ["train.iters=6", "train.batch_size=4", "data.train_images=8", "data.val_images=4",
        "data.image_size=32", "train.log_every=1"]  # smoke cell 0: the softmax head
LOSS_RTOL = 1e-4


@pytest.fixture()
def fast_backend(monkeypatch):
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def cell(*extra: str):
    return apply_overrides(smoke().cells[0], TINY + list(extra))


def losses(result) -> list[float]:
    return [entry["loss"] for entry in result.history]


@pytest.mark.slow
def test_compiled_training_equals_eager_and_resumes_bitwise(tmp_path, monkeypatch,
                                                            fast_backend) -> None:
    eager = train_and_evaluate(cell(), seed=1, progress=False)
    compiled_cell = cell("train.compile=true")
    compiled = train_and_evaluate(compiled_cell, seed=1, progress=False)
    assert len(losses(compiled)) == 6
    torch.testing.assert_close(losses(compiled), losses(eager), rtol=LOSS_RTOL, atol=0)

    import benchmark.train.engine as loop

    real_set_lr = loop.set_lr

    def stop_at_3(optimizer, c, s):
        if s == 3:
            os.kill(os.getpid(), 15)  # SIGTERM while step 3 runs: checkpoint after it
        return real_set_lr(optimizer, c, s)

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr(loop, "set_lr", stop_at_3)
        with pytest.raises(Interrupted):
            train_and_evaluate(compiled_cell, seed=1, progress=False, checkpoint_dir=ckpt)
    assert checkpoint.latest_valid(ckpt)[1]["step"] == 4
    resumed = train_and_evaluate(compiled_cell, seed=1, progress=False, checkpoint_dir=ckpt)
    assert resumed.timings.resumed_from_step == 4
    assert resumed.weights_sha256 == compiled.weights_sha256
    assert resumed.metrics == compiled.metrics


@pytest.mark.slow
def test_compiled_evaluation_does_not_recompile_per_image_size(fast_backend) -> None:
    from torch._dynamo.utils import counters

    spec = smoke().cells[0].model
    model = runtime.prepare_model(build_model(spec, 6, 255), cell("train.compile=true").train)
    sizes = [(128, 160), (160, 128), (192, 224), (144, 144), (224, 176), (176, 240),
             (208, 152)]
    images = [(torch.randn(3, h, w), torch.zeros(h, w, dtype=torch.long)) for h, w in sizes]
    graphs = []
    for item in images:
        predict_confusion(model, [item], 6, 255, batch_size=1, progress=False)
        graphs.append(counters["stats"]["unique_graphs"])
    new = [b - a for a, b in zip(graphs, graphs[1:])]
    # the first size change makes the shapes dynamic; a few thresholds recompile; then none
    assert sum(new) <= 4 and new[-3:] == [0, 0, 0], graphs


CNN = ["model.backbone=resnet18_d8", "model.decoder=fcn", "model.decoder_channels=16"]


@pytest.mark.parametrize("model", [[], CNN], ids=["mit_b0", "resnet18_d8_fcn"])
def test_channels_last_training_equals_contiguous(model) -> None:
    plain = train_and_evaluate(cell(*model), seed=2, progress=False)
    nhwc = train_and_evaluate(cell(*model, "train.channels_last=true"), seed=2, progress=False)
    torch.testing.assert_close(losses(nhwc), losses(plain), rtol=LOSS_RTOL, atol=0)


def test_channels_last_lays_out_weights_and_batches() -> None:
    model = runtime.prepare_model(build_model(smoke().cells[0].model, 6, 255),
                                  cell("train.channels_last=true").train)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs
                         if w.shape[-1] > 1 or w.shape[-2] > 1)


def test_deterministic_sets_the_flags_and_changes_nothing_on_the_cpu(monkeypatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that it is restored, set or not
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        assert not runtime.apply_determinism(cell().train)
        assert not torch.are_deterministic_algorithms_enabled()
        det = train_and_evaluate(cell("train.deterministic=true"), seed=4, progress=False)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == runtime.CUBLAS_WORKSPACE
        # the next cell of an inline grid, in the same process: switched off again
        plain = train_and_evaluate(cell(), seed=4, progress=False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:]
    assert det.weights_sha256 == plain.weights_sha256  # the CPU kernels were deterministic


def test_deterministic_warns_when_cuda_ran_before_the_cublas_setting(monkeypatch) -> None:
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG once per process: set after CUDA ran, it may not
    hold, and a deterministic cell says so (not when it was exported before, or on the CPU)."""
    import warnings

    flags = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    on = cell("train.deterministic=true").train
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that it is restored, set or not
    try:
        for cuda_ran, exported, warns in ((True, False, True), (True, True, False),
                                          (False, False, False)):
            monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_ran)
            monkeypatch.setattr(torch.cuda, "is_initialized", lambda: cuda_ran)
            if exported:
                monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
            else:
                monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert runtime.apply_determinism(on)
            said = [str(w.message) for w in caught if "CUBLAS_WORKSPACE_CONFIG" in str(w.message)]
            assert said == ([runtime.CUBLAS_TOO_LATE] if warns else []), (cuda_ran, exported)
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == (":16:8" if exported
                                                             else runtime.CUBLAS_WORKSPACE)
        # the engine's own order: make_accelerator sets it before the Accelerator starts CUDA,
        # so the run's apply_determinism, after CUDA started, has nothing to warn about
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
        monkeypatch.setattr(runtime, "Accelerator", lambda **kw: None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            runtime.make_accelerator(cell("train.deterministic=true"))
            monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
            runtime.apply_determinism(on)
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == runtime.CUBLAS_WORKSPACE
    finally:
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2:]


def test_amp_is_the_engines_autocast_not_accelerates(monkeypatch) -> None:
    """Accelerate's precision is one per process and refuses a second setting, so an inline grid
    mixing train.amp on and off would stop at its second cell, and its prepared model would
    evaluate in bf16: the Accelerator always gets "no", the training step bf16 autocast."""
    made = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime, "Accelerator", lambda **kw: made.append(kw))
    for amp in ("true", "false", "true"):
        runtime.make_accelerator(cell(f"train.amp={amp}"))
    assert [kw["mixed_precision"] for kw in made] == ["no"] * 3
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    on, off = cell("train.amp=true").train, cell("train.amp=false").train
    for train, device, enabled in ((on, gpu, True), (off, gpu, False), (on, cpu, False)):
        autocast = runtime.amp_autocast(train, device)
        assert autocast.args == (device.type,)
        assert autocast.keywords == {"dtype": torch.bfloat16, "enabled": enabled}
    with runtime.amp_autocast(on, cpu)():  # a context that does nothing on the CPU
        assert not torch.is_autocast_enabled("cpu")


def test_step_kernels_by_device_and_they_train_the_same(monkeypatch) -> None:
    """The training loop's swaps: on a GPU the deterministic ones with `train.deterministic`
    only; on the CPU the matmul-backward upsampling and the fused cross-entropy unless
    compiled. Both train to the same
    losses as torch's own kernels to float rounding (the GPU's forced here on the CPU), and
    the swapped functions are restored afterwards."""
    import contextlib

    import torch.nn.functional as F

    import methods.cross_entropy as cross_entropy
    import methods.interpolation as interpolation

    on = cell("train.deterministic=true").train
    compiled = cell("train.compile=true").train
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert isinstance(runtime.step_kernels(cell().train, gpu), contextlib.nullcontext)
    assert isinstance(runtime.step_kernels(compiled, cpu), contextlib.nullcontext)
    original = F.interpolate, F.cross_entropy
    runtime.step_kernels(cell().train, cpu)  # made but never entered: swaps nothing
    assert (F.interpolate, F.cross_entropy) == original
    with runtime.step_kernels(on, gpu):
        assert F.interpolate.__module__ == "methods.deterministic"
        assert F.cross_entropy.__module__ == "methods.deterministic"
    for train in (cell().train, on):
        with runtime.step_kernels(train, cpu):
            assert F.interpolate is interpolation._training_interpolate
            assert getattr(F.cross_entropy, "fused", False)
    assert (F.interpolate, F.cross_entropy) == original

    backward_calls = []
    backward = interpolation._MatmulBackwardInterpolate.backward

    def counted(ctx, grad):
        backward_calls.append(grad.shape)
        return backward(ctx, grad)

    loss_calls = []
    loss_backward = cross_entropy._FusedCrossEntropy.backward

    def counted_loss(ctx, grad):
        loss_calls.append(grad.shape)
        return loss_backward(ctx, grad)

    monkeypatch.setattr(interpolation._MatmulBackwardInterpolate, "backward",
                        staticmethod(counted))
    monkeypatch.setattr(cross_entropy._FusedCrossEntropy, "backward", staticmethod(counted_loss))
    monkeypatch.setattr(cross_entropy, "FUSED_MIN_NUMEL", 0)  # this cell's losses are small
    monkeypatch.setattr(cross_entropy, "FUSED_MIN_CLASSES", 0)
    matmul = train_and_evaluate(cell(), seed=4, progress=False)  # the engine's CPU default
    assert len(backward_calls) >= 6  # the decoder's and the loss's upsampling, every step
    assert len(loss_calls) >= 2  # the loss, every step
    entered = []

    def forced(train, device):
        entered.append(device.type)
        return runtime.deterministic_ops()

    monkeypatch.setattr(runtime, "step_kernels", forced)
    swapped = train_and_evaluate(cell(), seed=4, progress=False)
    monkeypatch.setattr(runtime, "step_kernels", lambda train, device: contextlib.nullcontext())
    plain = train_and_evaluate(cell(), seed=4, progress=False)
    monkeypatch.undo()
    assert entered == ["cpu"] and (F.interpolate, F.cross_entropy) == original
    assert losses(swapped) == pytest.approx(losses(plain), rel=1e-4)
    assert losses(matmul) == pytest.approx(losses(plain), rel=1e-4)


def test_new_settings_keep_every_cell_key() -> None:
    base = smoke().cells[0]
    off = apply_overrides(base, ["train.compile=false", "train.channels_last=false",
                                 "train.deterministic=false"])
    assert off.key == base.key
    for name in ("compile", "channels_last", "deterministic"):
        assert apply_overrides(base, [f"train.{name}=true"]).key != base.key
