"""The local broker's set-up."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.errors import StackError
from pipeline.ops.stack import LocalBroker, new_cluster_id
from pipeline.settings import Settings


def test_kraft_cluster_ids_never_read_as_an_option() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # about 47 would start with '-' by chance
    assert (
        not [i for i in ids if i.startswith("-")] and len(set(ids)) == 3000 and {len(i) for i in ids} == {22}
    )


def test_up_refuses_a_port_another_process_holds(tmp_path: Path) -> None:
    """A broker of another home on the port: ours would die "failed to bind" while the other answered,
    and `stack up` said started. Now it names the port and the way out, before fetching anything."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        broker = LocalBroker(Settings(home=tmp_path / "other", kafka_port=port))
        with pytest.raises(StackError, match=rf"port {port} on 127.0.0.1 is in use by another process"):
            broker.start(wait_s=5)
