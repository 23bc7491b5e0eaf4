from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from train_helpers import write_store

SCRIPT = """
import sys
from pathlib import Path
import torch
import torch.distributed as dist
from train_helpers import tiny_config
from surrogate.training.loop import run_training

store, out = Path(sys.argv[1]), Path(sys.argv[2])
result, state = run_training(tiny_config(steps=6, n_critic=2), store, out, progress=False)
rank = int(__import__("os").environ["RANK"])
torch.save({"G": state.generator.state_dict(), "D": state.discriminator.state_dict(),
            "G_ema": state.ema.model.state_dict()}, out / f"rank{rank}.pt")
"""


def _free_port() -> int:
    # torchrun's --master_port 0 does not pick a port for a static rendezvous (it hangs): ask the OS
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_torchrun_two_cpu_ranks_stay_identical(tmp_path: Path) -> None:
    """gloo DDP: ranks see different batches and latents, yet averaged gradients keep weights identical."""
    store = write_store(tmp_path / "prepare", n_events=1024)
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), str(script), str(store), str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
