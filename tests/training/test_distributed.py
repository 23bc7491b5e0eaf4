from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import write_store

SCRIPT = """
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from train_helpers import tiny_config
from surrogate.training.loop import run_training

store, out, steps, resume, model = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
cfg = tiny_config(steps=steps, n_critic=2, checkpoint_every=5, resume=resume, model=model)
result, state = run_training(cfg, store, out, progress=False)
rank = int(__import__("os").environ["RANK"])
out.mkdir(parents=True, exist_ok=True)  # only rank 0 creates it, when it writes a checkpoint
torch.save({"G": state.generator.state_dict(), "D": state.discriminator.state_dict(),
            "G_ema": state.ema.model.state_dict()}, out / f"rank{rank}.pt")
"""


def _free_port() -> int:
    # torchrun's --master_port 0 does not pick a port for a static rendezvous (it hangs): ask the OS
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(tmp_path: Path, store: Path, out: Path, steps: int, resume: str = "", model: str = "") -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    # keep the caller's PYTHONPATH after the helpers: a checkout run with PYTHONPATH=$PWD tests its own code
    path = os.pathsep.join(p for p in (str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script), str(store), str(out), str(steps),
                           resume, model], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


# the domain's default, the structured model, and the image model (16x16: 256 features)
@pytest.mark.parametrize(("model", "n_features"), [("", 8), ("calo_shower", 8), ("image_gan", 256)])
def test_torchrun_two_cpu_ranks_stay_identical(tmp_path: Path, model: str, n_features: int) -> None:
    """gloo DDP: ranks see different batches and latents, yet averaged gradients keep weights identical."""
    store = write_store(tmp_path / "prepare", n_events=1024, n_features=n_features)
    out = tmp_path / "run"
    _torchrun(tmp_path, store, out, 6, model=model)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("G", "D", "G_ema"):
        for name, tensor in ranks[0][key].items():
            assert torch.equal(tensor, ranks[1][key][name]), f"{key}.{name} differs between ranks"
    # only rank 0 wrote checkpoints, and they record the 2-process run
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]["noise"]) == 2
    assert not torch.equal(ckpt["rng"]["noise"][0], ckpt["rng"]["noise"][1])  # per-rank latents
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt", "step_0000005.pt",
                                                                         "step_0000006.pt"]


@pytest.mark.slow
def test_torchrun_resume_is_bit_identical(tmp_path: Path) -> None:
    """Two ranks: 6 steps straight == 3 steps + resume to 6, including each rank's latent stream (~35 s)."""
    store = write_store(tmp_path / "prepare", n_events=1024)
    _torchrun(tmp_path, store, tmp_path / "a", 6)
    _torchrun(tmp_path, store, tmp_path / "b", 3)
    _torchrun(tmp_path, store, tmp_path / "b", 6, str(tmp_path / "b" / "checkpoints" / "last.pt"))
    for rank in range(2):
        a = torch.load(tmp_path / "a" / f"rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / "b" / f"rank{rank}.pt", weights_only=True)
        for key in ("G", "D", "G_ema"):
            assert all(torch.equal(a[key][name], b[key][name]) for name in a[key]), (rank, key)
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert a["loader"] == b["loader"]
    assert all(torch.equal(x, y) for x, y in zip(a["rng"]["noise"], b["rng"]["noise"], strict=True))
