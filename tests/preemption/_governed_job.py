"""A one-rank training job governed by its Checkpoint (run as a process by the tests).

Trains forever in small steps with Cairn's ``save_due`` at each step boundary, as a script that
keeps its own cadence does, until the file ``argv[2]`` exists. Periodic saves are rare
(``save_interval=10000``), so a committed save is the answer to the cluster's request.
Environment: ``CAIRN_CHECKPOINT`` and ``KUBECONFIG`` name the Checkpoint and the API server.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from cairn_agent import checkpointing
from cairn_agent.config import CheckpointConfig, ConfigContainer
from cairn_agent.engine.dist import single_process_group
from cairn_agent.state.train import GlobalState


def main(root: str, stop_file: str) -> None:
    torch.manual_seed(0)
    config = CheckpointConfig(save=root, load=root, save_interval=10_000)
    state = GlobalState(ConfigContainer(checkpoint=config))
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with single_process_group():
        checkpointing.load_checkpoint(state, [model], optimizer, None)
        step = 0
        while not Path(stop_file).exists():
            step += 1
            state.train_state.step = step
            optimizer.zero_grad()
            model(torch.randn(2, 4)).sum().backward()
            optimizer.step()
            if checkpointing.save_due(state).persistent:
                checkpointing.save_checkpoint(state, [model], optimizer, None, 0.0)
            time.sleep(0.02)
    print(f"stopped at step {step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
