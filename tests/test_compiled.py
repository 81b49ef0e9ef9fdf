"""trainer.compile: the network compiled in place, ATen's max pool under inductor, eager where no
C++ compiler exists, and a real job trained compiled (the CPU default) end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from fus2net.models import create_model
from fus2net.training import compiled
from fus2net.training.compiled import AtenMaxPool2d, compile_network, use_aten_max_pools
from jobs import run_train, sqlite_client, tiny


@pytest.mark.parametrize(
    "options",
    [{"stride": 2}, {"stride": 2, "padding": 1}, {"stride": 2, "ceil_mode": True}],
    ids=["fus2net", "resnet-densenet", "googlenet"],
)
def test_aten_max_pool_matches_max_pool_under_compile_forward_and_backward(options: dict) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 5, 18, 18, requires_grad=True)
    reference = nn.MaxPool2d(3, **options)(x)
    reference.square().sum().backward()
    expected = x.grad.clone()
    x.grad = None
    pool = torch.compile(AtenMaxPool2d(3, **options), options=compiled.CPU_INDUCTOR_OPTIONS)
    out = pool(x)
    out.square().sum().backward()
    assert torch.equal(out, reference)
    assert torch.equal(x.grad, expected)


def test_compiled_network_keeps_its_names_and_its_maths() -> None:
    torch.manual_seed(0)
    eager = create_model("fus2net", drop_rate=0.0)
    net = create_model("fus2net", drop_rate=0.0)
    net.load_state_dict(eager.state_dict())
    assert compile_network(net, "cpu")
    assert isinstance(net.block1.module1.pool, AtenMaxPool2d)
    assert list(net.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefix
    x = torch.randn(2, 3, 64, 64)
    expected, got = eager(x), net(x)
    expected.sum().backward()
    got.sum().backward()
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)
    grad, grad_ref = net.stem.conv1.conv.weight.grad, eager.stem.conv1.conv.weight.grad
    assert (grad - grad_ref).norm() / grad_ref.norm() < 1e-2  # fast-math reassociation only


def test_fus2net_traces_as_one_graph() -> None:
    """No graph break in a training step's forward (a cached_property once split it into 5)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    net = create_model("fus2net", drop_rate=0.5).train()
    torch.compile(net, backend=counter)(torch.randn(2, 3, 64, 64)).sum().backward()
    assert counter.frame_count == 1


def test_no_cpp_compiler_trains_eagerly_and_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    net = create_model("fus2net")
    with caplog.at_level(logging.WARNING, logger=compiled.__name__):
        assert not compile_network(net, "cpu")
    assert "no C++ compiler" in caplog.text and "training eagerly" in caplog.text
    assert type(net.block1.module1.pool) is nn.MaxPool2d  # untouched
    assert net._compiled_call_impl is None


def test_use_aten_max_pools_swaps_only_plain_max_pools() -> None:
    net = nn.Sequential(nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Sequential(nn.MaxPool2d(3, 1, 1)))
    assert use_aten_max_pools(net) == 2
    assert [type(m).__name__ for m in net.modules()][1:] == [
        "AtenMaxPool2d", "AvgPool2d", "Sequential", "AtenMaxPool2d",
    ]  # fmt: skip
    assert (net[2][0].kernel_size, net[2][0].stride, net[2][0].padding) == (3, 1, 1)


def test_a_job_trains_compiled_end_to_end(tmp_path: Path) -> None:
    """The CPU trainer's default: two folds trained and scored through the compiled network,
    its weights saved under the model's own names."""
    run_train(tiny("trainer.compile=true", "data.image_size=64", "dataset.image_size=96"), tmp_path)
    client = sqlite_client(tmp_path)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`fus2net.role` = 'fold'"
    )
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.params["trainer.compile"] == "True" for r in runs)
    weights = sorted(tmp_path.glob("outputs/**/fold_0/model.pt"))
    assert weights, "no fold_0/model.pt under outputs/"
    state = torch.load(weights[0], weights_only=True)
    assert list(state) == list(create_model("fus2net").state_dict())
