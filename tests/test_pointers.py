"""The proxy pointer the DAG passes from batch to batch (static vs dynamic)."""

from cift.deploy.pointers import base_deployed, base_proxy, next_proxy

PROMOTED = {
    "version": "main/b1",
    "adapter_path": "runs/main/versions/b1",
    "key": "lora-0123456789abcdef",
    "decision": "promote",
}
KEPT = {**PROMOTED, "decision": "keep"}


def test_dynamic_proxy_follows_a_promotion_only():
    start = base_proxy("main", "dynamic")
    assert start["proxy_source"] == "base" and start["adapter_path"] is None
    moved = next_proxy(start, PROMOTED, "dynamic")
    assert moved == {
        "version": "main/b1",
        "adapter_path": "runs/main/versions/b1",
        "key": "lora-0123456789abcdef",  # the weights' hash: a retrained adapter moves proxy.json
        "proxy_source": "shared",
    }
    assert next_proxy(moved, KEPT, "dynamic") == moved
    assert next_proxy(start, None, "dynamic") == start


def test_static_proxy_never_moves():
    start = base_proxy("main", "static")
    assert start["proxy_source"] == "static"
    assert next_proxy(start, PROMOTED, "static") == start


def test_base_deployed_has_no_adapter():
    assert base_deployed("x") == {"version": "x/base", "adapter_path": None, "decision": "base"}


def test_blocked_selections_wait_for_the_next_candidate_until_a_promotion():
    from cift.deploy.pointers import pending_after

    b1, b2, b3 = [{"id": "a"}], [{"id": "b"}], [{"id": "c"}]
    after_b1 = pending_after([], b1, promoted=False, carry=True)
    after_b2 = pending_after(after_b1, b2, promoted=False, carry=True)
    assert after_b2 == b1 + b2  # b3's candidate trains on both blocked selections and its own
    assert pending_after(after_b2, b3, promoted=True, carry=True) == []  # production has them
    assert pending_after(after_b1, b2, promoted=False, carry=False) == []  # the old behaviour
