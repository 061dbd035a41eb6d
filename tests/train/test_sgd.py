"""cnnlab's SGD takes torch.optim.SGD's steps exactly, shares its state-dict layout, and never
imports torch._dynamo (the reason it exists)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from cnnlab.train.sgd import SGD


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))


def _groups(model: nn.Module, wd: float) -> list[dict]:
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return [
        {"params": first, "weight_decay": wd},
        {"params": second, "weight_decay": 0.0, "lr": 0.05},
    ]


@pytest.mark.parametrize(
    "momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 1e-3), (0.9, True, 5e-4)]
)
def test_steps_match_torch_sgd(momentum, nesterov, wd):
    ours_m, ref_m = _model(), _model()
    kw = dict(lr=0.1, momentum=momentum, nesterov=nesterov)
    ours = SGD(_groups(ours_m, wd), **kw)
    ref = torch.optim.SGD(_groups(ref_m, wd), foreach=True, **kw)
    x, y = torch.randn(16, 5), torch.randn(16, 3)
    for step in range(6):
        for m, opt in ((ours_m, ours), (ref_m, ref)):
            opt.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            if step == 2:  # a parameter without a gradient is skipped, as torch skips it
                m[2].bias.grad = None
            opt.step()
        for a, b in zip(ours_m.parameters(), ref_m.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_state_dict_layout_is_torch_s_and_loads_both_ways():
    m1, m2 = _model(), _model()
    ours = SGD(_groups(m1, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    ref = torch.optim.SGD(_groups(m2, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    x, y = torch.randn(8, 5), torch.randn(8, 3)
    for m, opt in ((m1, ours), (m2, ref)):
        nn.functional.mse_loss(m(x), y).backward()
        opt.step()
    a, b = ours.state_dict(), ref.state_dict()
    assert a["state"].keys() == b["state"].keys()
    assert [g["params"] for g in a["param_groups"]] == [g["params"] for g in b["param_groups"]]
    for k in a["state"]:
        torch.testing.assert_close(
            a["state"][k]["momentum_buffer"], b["state"][k]["momentum_buffer"]
        )
    fresh = SGD(_groups(_model(), 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    fresh.load_state_dict(b)  # a checkpoint written by torch's SGD resumes with ours
    assert len(fresh.state) == 4 and fresh.param_groups[1]["lr"] == 0.05
    ref.load_state_dict(a)  # and the other way round
    with pytest.raises(ValueError, match="parameter groups"):
        SGD(_model().parameters(), lr=0.1).load_state_dict(a)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(_model().parameters(), lr=0.1, nesterov=True)


def test_a_cli_training_run_with_sgd_never_imports_dynamo(tmp_path):
    # the whole `cnnlab train` path: the registry's meta-device model build, the whitening stem,
    # the optimizer, checkpoints and the final evaluation
    code = (
        "import runpy, sys\n"
        "sys.argv = ['cnnlab', 'train', '--model', 'fastnet', '--model_kwargs.width', '4',"
        " '--model_kwargs.whiten', 'true', '--optim.name', 'sgd', '--optim.lr', '0.1',"
        " '--epochs', '1', '--batch-size', '256', '--report', 'false', '--threads', '1',"
        f" '--out_dir', {str(tmp_path)!r}]\n"
        "try:\n"
        "    runpy.run_module('cnnlab', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print('dynamo imported:', 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "dynamo imported: False"
