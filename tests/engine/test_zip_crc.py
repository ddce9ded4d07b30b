"""Saves skip torch.save's zip CRC-32 (a second inline pass over every byte; the manifest's
CRC32C already covers the files), on the sync path and in the async worker, without leaving
the switch off for the user's own ``torch.save`` calls."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path
from typing import Any

from tests.distributed import run_ranks


def _state() -> dict[str, Any]:
    import torch

    gen = torch.Generator().manual_seed(3)
    return {f"t{i}": torch.rand(1000 + i, generator=gen) for i in range(3)}


def _sharded(state: dict[str, Any]) -> dict[str, Any]:
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    return {k: ShardedTensor.from_rank_offsets(k, v) for k, v in state.items()}


def _data_record_crcs(checkpoint: Path) -> list[int]:
    """The zip CRC field of every tensor item's data record in ``checkpoint``'s shards."""
    from torch.distributed.checkpoint import FileSystemReader

    crcs = []
    for info in FileSystemReader(checkpoint).read_metadata().storage_data.values():
        with open(checkpoint / info.relative_path, "rb") as handle:
            handle.seek(info.offset)
            blob = handle.read(info.length)
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            crcs += [i.CRC for i in archive.infolist() if "/data/" in i.filename]
    return crcs


def _sync_and_async(rank: int, world_size: int, root: str) -> dict[str, Any]:
    import torch
    from cairn_agent.async_save import AsyncRequest, AsyncSaveQueue
    from cairn_agent.engine.load import load_checkpoint_dir
    from cairn_agent.engine.save import SaveTarget, save_sync

    state = _state()
    # Two write threads: DCP's second thread must skip the CRC too.
    synced = save_sync(
        _sharded(state), SaveTarget(root=Path(root) / "sync", iteration=1), thread_count=2
    )
    queue = AsyncSaveQueue()
    queue.schedule(
        AsyncRequest(
            sharded_state_dict=_sharded(state),
            target=SaveTarget(root=Path(root) / "async", iteration=1),
            thread_count=2,
        )
    )
    (committed,) = queue.maybe_finalize(blocking=True)
    queue.close()
    asynced = Path(root) / "async" / f"iter_{committed:07d}"
    mine = io.BytesIO()
    torch.save(torch.ones(10), mine)  # the user's own save, after Cairn's
    loaded = {
        name: load_checkpoint_dir(_sharded({k: torch.zeros_like(v) for k, v in state.items()}), d)
        for name, d in (("sync", synced), ("async", asynced))
    }
    return {
        "sync_crcs": _data_record_crcs(synced),
        "async_crcs": _data_record_crcs(asynced),
        "option_after": torch.serialization.get_crc32_options(),
        "user_crcs": [i.CRC for i in zipfile.ZipFile(mine).infolist() if "/data/" in i.filename],
        "equal": {n: all(torch.equal(d[k], state[k]) for k in state) for n, d in loaded.items()},
    }


def test_saves_write_no_zip_crc_and_leave_torch_save_alone(tmp_path: Path) -> None:
    (result,) = run_ranks(_sync_and_async, 1, str(tmp_path))
    assert len(result["sync_crcs"]) == 3 and set(result["sync_crcs"]) == {0}
    assert len(result["async_crcs"]) == 3 and set(result["async_crcs"]) == {0}
    assert result["equal"] == {"sync": True, "async": True}
    assert result["option_after"] is True
    assert result["user_crcs"] and all(result["user_crcs"])


def test_the_switch_holds_for_its_own_thread_only() -> None:
    import torch
    from cairn_agent.engine.dcp_files import without_zip_crc

    seen: list[bool] = []
    with without_zip_crc():
        inside = torch.serialization.get_crc32_options()
        # Another thread (the user's own checkpoint thread, say) keeps torch's default.
        other = threading.Thread(
            target=lambda: seen.append(torch.serialization.get_crc32_options())
        )
        other.start()
        other.join(10)
    assert inside is False
    assert seen == [True]
    assert torch.serialization.get_crc32_options() is True
