"""What the node-local tier holds across the job: which iteration every rank can restore.

Every rank lists the parts its directory holds that are committed and intact (and the copies
it found unusable); one all-gather gives every rank the same :class:`Survey`. An iteration is
restorable when each rank's part has at least one intact copy somewhere in its clique: the
rank reads its own, or receives a replica.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from cairn_agent.engine import dist


@dataclass(frozen=True)
class Survey:
    """Intact copies of every part, job-wide."""

    world_size: int
    holders: dict[int, dict[int, list[int]]]
    """Iteration -> origin rank -> ranks holding an intact, committed copy of its part."""
    problems: list[str] = field(default_factory=list)
    """Unusable copies every rank found (missing, corrupt), for the log and the status."""

    @property
    def restorable(self) -> int:
        """Newest iteration every rank can restore, or -1."""
        complete = [it for it in self.holders if not self.lost_parts(it)]
        return max(complete, default=-1)

    @property
    def newest(self) -> int:
        """Newest iteration any intact part exists for, or -1."""
        return max(self.holders, default=-1)

    def lost_parts(self, iteration: int) -> list[int]:
        """Ranks whose part of ``iteration`` has no intact copy anywhere."""
        held = self.holders.get(iteration, {})
        return [r for r in range(self.world_size) if not held.get(r)]

    def copies(self, iteration: int) -> int:
        """Intact copies of the least-replicated part of ``iteration`` (0: not restorable)."""
        held = self.holders.get(iteration, {})
        return min((len(held.get(r, [])) for r in range(self.world_size)), default=0)

    def holding_ranks(self, iteration: int) -> list[int]:
        """Ranks that hold any copy of ``iteration``."""
        held = self.holders.get(iteration, {})
        return sorted({h for ranks in held.values() for h in ranks})

    def why_not(self, iteration: int) -> str:
        """Why ``iteration`` cannot be restored, in one line."""
        lost = self.lost_parts(iteration)
        text = f"the parts of ranks {lost} of local iteration {iteration} have no intact copy"
        if self.problems:
            text += f" ({'; '.join(self.problems[:3])})"
        return text


def build(
    world_size: int, gathered: Sequence[tuple[Sequence[tuple[int, int]], list[str]]]
) -> Survey:
    """The survey from each rank's ``(intact (iteration, origin) parts, problems)``."""
    holders: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    problems: list[str] = []
    for holder, (parts, found) in enumerate(gathered):
        for iteration, origin in parts:
            holders[iteration][origin].append(holder)
        problems.extend(found)
    plain = {it: dict(origins) for it, origins in holders.items()}
    return Survey(world_size=world_size, holders=plain, problems=problems)


def gather(parts: Sequence[tuple[int, int]], problems: list[str]) -> Survey:
    """Collective: every rank's intact parts and problems, as one survey on every rank."""
    gathered = dist.all_gather_object((list(parts), list(problems)))
    return build(dist.get_world_size(), gathered)
