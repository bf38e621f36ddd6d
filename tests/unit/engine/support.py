"""What only the engine's tests need: feeding RawLines in order, and looking into a session's buffer."""

from __future__ import annotations

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import Emission
from pipeline.types import RawLine


def process(hs: Hindsight, lines: list[RawLine], replay: bool = False) -> Emission:
    """RawLines in partition order; consecutive lines of one raw message are processed together."""
    em = Emission()
    i = 0
    while i < len(lines):
        first = lines[i]
        j = i + 1
        while j < len(lines) and lines[j].offset == first.offset and lines[j].partition == first.partition:
            j += 1
        run = lines[i:j]
        em.merge(
            hs.process_message(
                first.topic,
                first.partition,
                first.offset,
                [ln.record for ln in run],
                [ln.index for ln in run],
                replay,
            )
        )
        i = j
    return em


def buffered(hs: Hindsight, key: str) -> list[RawLine]:
    """The lines buffered for one session key, oldest first."""
    for eng in hs.engines.values():
        st = eng.sessions.get(key)
        if st is not None:
            return [c.line(eng.topic, eng.partition, p) for c in st.buf for p in range(c.start, len(c.recs))]
    return []
