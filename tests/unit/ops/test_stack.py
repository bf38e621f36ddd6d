"""The local broker's set-up."""

from __future__ import annotations

from pipeline.ops.stack import new_cluster_id


def test_kraft_cluster_ids_never_read_as_an_option() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # about 47 would start with '-' by chance
    assert (
        not [i for i in ids if i.startswith("-")] and len(set(ids)) == 3000 and {len(i) for i in ids} == {22}
    )
