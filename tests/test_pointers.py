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
