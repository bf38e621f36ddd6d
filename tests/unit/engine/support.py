"""What only the engine's tests need: engines that buffer records or encoded lines (every test runs
both ways), feeding RawLines in order, and looking into a session's buffer."""

from __future__ import annotations

import orjson

from pipeline.engine.hindsight import Hindsight
from pipeline.engine.model import Emission, WindowConfig
from pipeline.types import LogRecord, RawLine

# set by the engine tests' conftest for each run: "records" or "encoded"
MODE = {"buffers": "records"}


def decode(line: bytes) -> LogRecord:
    rec: LogRecord = orjson.loads(line)
    return rec


def new_hindsight(config: WindowConfig) -> Hindsight:
    """The engine as the tests' current mode keeps buffered lines (the worker keeps them encoded)."""
    return Hindsight(config, decode if MODE["buffers"] == "encoded" else None)


def encode(records: list[LogRecord]) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


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
        records = [ln.record for ln in run]
        encoded = encode(records) if hs.shared.decode_line is not None else None
        em.merge(
            hs.process_message(
                first.topic, first.partition, first.offset, records, [ln.index for ln in run], replay, encoded
            )
        )
        i = j
    return em


def buffered(hs: Hindsight, key: str) -> list[RawLine]:
    """The lines buffered for one session key, oldest first."""
    for eng in hs.engines.values():
        st = eng.sessions.get(key)
        if st is not None:
            return [c.line(eng.topic, eng.partition, p) for c in st.buf for p in range(c.start, c.count)]
    return []
