"""The embedded Ray binds to loopback, and the test process cannot reach beyond it."""

import socket

import pytest


def test_socket_guard_blocks_outside_addresses():
    with pytest.raises(Exception, match="(?i)socket|host"):
        socket.create_connection(("192.0.2.1", 53), timeout=1)


@pytest.mark.slow
def test_embedded_ray_is_on_loopback(ray_local):
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert len(nodes) == 1
    assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"
    assert ray.get(ray.remote(lambda: 2 + 3).remote()) == 5
