"""Channel URL options are checked when a channel opens, on every backend alike.

An unknown key is refused with the closest known one; numbers must be finite
and in range; a password never appears in a message or a repr.
"""

from __future__ import annotations

import pytest

import reactor
from reactor.channels.redis.options import parse_url as parse_redis
from reactor.channels.registry import backend_for
from reactor.channels.sqlite.options import parse_url as parse_sqlite
from reactor.errors import TopologyError, UnknownChannelError
from reactor.runtime.declarations import ChannelDecl

pytest.importorskip("redis")

BASE = "redis://:hunter2@localhost:6379/0"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (
            "prefx=shop",
            "unknown redis option 'prefx' in redis://localhost:6379/0; did you mean 'prefix'?",
        ),
        ("leese=3", "did you mean 'lease'?"),
        ("sockettimeout=3", "did you mean 'socket_timeout'?"),
        ("colour=blue", "unknown redis option 'colour'"),
        ("lease=nan", "option lease='nan'"),
        ("lease=inf", "option lease='inf'"),
        ("maxage=-1", "option maxage='-1'"),
        ("maxage=infinity", "option maxage='infinity'"),
        ("maxlen=1.5", "option maxlen='1.5'"),
        ("maxlen=0", "option maxlen='0'"),
        ("block_ms=0", "option block_ms='0'"),
        ("block_ms=600000", "an integer from 1 to 60000"),
        ("publish_timeout=nan", "option publish_timeout='nan'"),
        ("approx=maybe", "option approx='maybe'"),
        ("prefix=", "option prefix=''"),
        ("start=5", "option start='5'"),
        ("socket_timeout=soon", "option socket_timeout='soon'"),
        ("socket_timeout=nan", "option socket_timeout='nan'"),
        ("max_connections=many", "option max_connections='many'"),
    ],
)
def test_a_bad_redis_option_names_the_channel_and_the_option(query: str, fragment: str) -> None:
    with pytest.raises(TopologyError) as caught:
        parse_redis(f"{BASE}?{query}", "orders")
    message = str(caught.value)
    assert "channel 'orders'" in message
    assert fragment in message
    assert "hunter2" not in message


def test_good_redis_options_pass_both_reactors_and_redis_pys() -> None:
    options = parse_redis(
        f"{BASE}?prefix=shop&lease=2.5&approx=yes&maxlen=10&socket_timeout=3&client_name=x",
        "orders",
    )
    assert (options.prefix, options.lease_s, options.approximate, options.maxlen) == (
        "shop",
        2.5,
        True,
        10,
    )
    assert "socket_timeout=3" in options.client_url
    assert "client_name=x" in options.client_url
    assert "prefix" not in options.client_url
    assert "hunter2" not in options.display


def test_tls_options_are_known_on_rediss() -> None:
    options = parse_redis("rediss://localhost:6380/0?ssl_cert_reqs=none", "orders")
    assert "ssl_cert_reqs=none" in options.client_url


def test_a_non_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(TopologyError) as caught:
        parse_redis("http://admin:hunter2@localhost/0", "orders")
    assert "hunter2" not in str(caught.value)
    assert "http://admin:***@localhost/0" in str(caught.value)


def test_a_sqlite_option_typo_gets_did_you_mean() -> None:
    with pytest.raises(
        TopologyError, match=r"unknown sqlite option 'max_event'.*did you mean 'max_events'\?"
    ):
        parse_sqlite("sqlite:///x.db?max_event=5", "orders")


def test_an_unknown_scheme_hides_the_password() -> None:
    with pytest.raises(TopologyError) as caught:
        backend_for("bogus://admin:hunter2@host/0")
    assert "hunter2" not in str(caught.value)
    assert "bogus://admin:***@host/0" in str(caught.value)
    topo = reactor.Topology("t")
    topo.channel("orders", backend="bogus://admin:hunter2@host/0")
    with pytest.raises(TopologyError) as invalid:
        topo.validate()
    assert "hunter2" not in str(invalid.value)


def test_a_channel_declarations_repr_hides_the_password() -> None:
    decl = ChannelDecl("orders", backend="redis://admin:hunter2@host:6379/0")
    assert "hunter2" not in repr(decl)
    assert "redis://admin:***@host:6379/0" in repr(decl)
    topo = reactor.Topology("t")
    topo.channel("orders", backend="redis://admin:hunter2@host:6379/0")
    assert "hunter2" not in repr(topo.channels)


# -- channel names -------------------------------------------------------------------


def handle(event: reactor.Event) -> None:
    return None


def test_a_channel_name_typo_gets_did_you_mean_and_the_list_includes_system() -> None:
    topo = reactor.Topology("t")
    topo.channel("orders")
    topo.consumer("c", handle, channel="ordrs", pattern="#")
    with pytest.raises(TopologyError) as caught:
        topo.validate()
    message = str(caught.value)
    assert "unknown channel 'ordrs'; did you mean 'orders'?" in message
    assert "(channels: orders, $system)" in message


def test_subscribing_to_deadletter_as_a_channel_says_to_use_system() -> None:
    topo = reactor.Topology("t")
    topo.channel("orders")
    topo.consumer("dead", handle, channel="$deadletter", pattern="#")
    with pytest.raises(TopologyError) as caught:
        topo.validate()
    message = str(caught.value)
    assert "channel='$system', pattern='$deadletter'" in message
    assert "topology.channel('$deadletter')" not in message


def test_publishing_to_a_misspelt_channel_gets_did_you_mean() -> None:
    topo = reactor.Topology("t")
    topo.channel("orders")
    with topo.start() as system:
        with pytest.raises(UnknownChannelError) as caught:
            system.publish("ordres", "orders.created", {})
        assert "did you mean 'orders'?" in str(caught.value)
        assert "$system" in str(caught.value)
        with pytest.raises(UnknownChannelError) as dead:
            system.publish("$deadletter", "x.y", {})
        assert "channel='$system', pattern='$deadletter'" in str(dead.value)
