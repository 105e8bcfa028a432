"""The Python clients: unreachable is never absent, failover, endpoints, timeouts (issue 13,
items 2 and 3). Most run against a scripted transport or a dead port; a few against a
real one-node cluster."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from paxoskv.client import AsyncClient, Client, Election, Entry, NoQuorum, Unreachable
from paxoskv.devcluster import free_ports
from tests.harness import LocalCluster, running

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from running(tmp_path_factory.mktemp("client"), 1)


@pytest.fixture
def dead() -> str:
    """The URL of a port nothing listens on."""
    return f"http://127.0.0.1:{free_ports(1)[0]}"


def scripted(answers: list[tuple[int, dict[str, Any]]], seen: list[dict[str, Any]],
             **options: Any) -> Client:
    """A client whose requests get `answers` in turn; `seen` collects the bodies."""
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        status, body = answers.pop(0)
        return httpx.Response(status, json=body)

    kv = Client("http://node.invalid:7001", **options)
    kv._http = httpx.Client(transport=httpx.MockTransport(handler))
    return kv


def entry_body(found: bool = True, **extra: Any) -> dict[str, Any]:
    return {"bucket": "default", "key": "k", "found": found, "value": "v" if found else None,
            "token": 1, "bindings": {}, **extra}


SERVER_NO_QUORUM = {"error": {"code": "no_quorum", "message": "no quorum answered within "
                              "5000 ms; the change may or may not have been decided"}}


# -- item 2: an unreachable cluster never reads as a missing key --------------------------


def test_unreachable_under_return_is_an_error_entry_that_cannot_read_as_missing(
        dead: str) -> None:
    with Client([dead], timeout=1.0) as kv:
        entry = kv.get("k")  # "return", the default
        assert not entry.ok and entry.error == "unreachable"
        assert dead in entry.message and "connection refused" in entry.message
        for name in ("found", "value", "token", "bindings", "deleted", "changed", "created"):
            with pytest.raises(Unreachable):
                getattr(entry, name)
        assert "found" not in entry.to_dict() and entry.to_dict()["error"] == "unreachable"
        assert "unreachable" in repr(entry)


def test_unreachable_raises_under_fail_and_retry_naming_each_endpoint(dead: str) -> None:
    other = f"http://127.0.0.1:{free_ports(1)[0]}"
    with Client([dead, other], timeout=0.5) as kv:
        for policy in ("fail", "retry"):
            with pytest.raises(Unreachable) as raised:
                kv.put("k", "v", no_quorum=policy)
            assert raised.value.code == "unreachable"
            assert isinstance(raised.value, NoQuorum)  # `except NoQuorum` still catches it
            assert dead in str(raised.value) and other in str(raised.value)


def test_bindings_lookups_without_an_answer_raise_instead_of_the_default(dead: str) -> None:
    with Client([dead], timeout=0.5) as kv:
        with pytest.raises(Unreachable):
            kv.pid("k", "no-session")
        with pytest.raises(Unreachable):
            kv.node("k")


def test_a_no_quorum_answer_under_return_cannot_read_as_missing() -> None:
    seen: list[dict[str, Any]] = []
    with scripted([(503, SERVER_NO_QUORUM)], seen) as kv:
        entry = kv.get("k")
    assert entry.error == "no_quorum" and not entry.ok
    with pytest.raises(NoQuorum) as raised:
        _ = entry.found
    assert not isinstance(raised.value, Unreachable)


def test_answers_read_as_before() -> None:
    entry = Entry("b", "k", True, {"x": 1}, 3, {"pid": "s"}, False, True)
    assert entry.ok and entry.found and entry.value == {"x": 1} and entry.token == 3
    assert entry.bindings == {"pid": "s"} and entry.changed and not entry.deleted
    assert entry == Entry("b", "k", True, {"x": 1}, 3, {"pid": "s"}, False, True)
    assert entry != Entry("b", "k", True, {"x": 1}, 4, {"pid": "s"}, False, True)
    assert entry.exception() is None


async def test_async_client_unreachable_is_an_error_entry_too(dead: str) -> None:
    async with AsyncClient([dead], timeout=0.5) as kv:
        entry = await kv.get("k")
        assert entry.error == "unreachable"
        with pytest.raises(Unreachable):
            _ = entry.found
        with pytest.raises(Unreachable):
            await kv.get("k", no_quorum="fail")


# -- item 3: status fails over; endpoint errors name the URL ------------------------------


@pytest.mark.parametrize("url", ["localhost:7001", "127.0.0.1:7001", "ftp://h:1", "http://"])
def test_an_endpoint_without_http_is_refused_naming_it(url: str) -> None:
    with pytest.raises(ValueError, match="is not an http"):
        Client(["http://127.0.0.1:7001", url])
    with pytest.raises(ValueError) as raised:
        AsyncClient(url)
    assert repr(url) in str(raised.value)


def test_status_fails_over_to_an_endpoint_that_answers(cluster: LocalCluster,
                                                       dead: str) -> None:
    for first in range(2):  # the dead endpoint tried first, then second
        with Client([dead, cluster.url(0)], timeout=2.0) as kv:
            kv._current = first
            status = kv.status()
        assert status["name"] == "n1" and status["endpoint"] == cluster.url(0)
        assert status["quorate"] is True


def test_status_of_no_answering_endpoint_names_each(dead: str) -> None:
    other = f"http://127.0.0.1:{free_ports(1)[0]}"
    with Client([dead, other], timeout=1.0) as kv, pytest.raises(Unreachable) as raised:
        kv.status()
    assert f"{dead} (connection refused)" in str(raised.value)
    assert f"{other} (connection refused)" in str(raised.value)


def test_status_all_lists_every_endpoint(cluster: LocalCluster, dead: str) -> None:
    with Client([dead, cluster.url(0)], timeout=2.0) as kv:
        views = kv.status_all()
    assert [v["endpoint"] for v in views] == [dead, cluster.url(0)]
    assert views[0]["error"] == "unreachable" and views[1]["name"] == "n1"


async def test_async_status_fails_over(cluster: LocalCluster, dead: str) -> None:
    async with AsyncClient([dead, cluster.url(0)], timeout=2.0) as kv:
        kv._current = 0
        status = await kv.status()
        views = await kv.status_all()
    assert status["name"] == "n1"
    assert [v.get("error") for v in views] == ["unreachable", None]


# -- timeouts and messages ----------------------------------------------------------------


def test_a_watch_longer_than_the_server_limit_is_renewed() -> None:
    seen: list[dict[str, Any]] = []
    answers = [(200, entry_body(changed=False)), (200, entry_body(changed=True, token=2))]
    with scripted(answers, seen) as kv:
        entry = kv.watch("k", 1, timeout=100)
    assert entry.changed and len(seen) == 2
    assert all(59_000 < body["timeout_ms"] <= 60_000 for body in seen)


def test_retry_goes_on_past_the_server_limit() -> None:
    seen: list[dict[str, Any]] = []
    answers = [(503, SERVER_NO_QUORUM), (200, entry_body())]
    with scripted(answers, seen, timeout=100) as kv:
        entry = kv.get("k", no_quorum="retry")
    assert entry.ok and entry.value == "v" and len(seen) == 2
    assert 59_000 < seen[0]["timeout_ms"] <= 60_000


def test_session_calls_retry_without_a_quorum_only_under_retry() -> None:
    """Issue 13: `--no-quorum retry` held for put and get but not for the session
    calls, which always failed at the first no_quorum answer."""
    opened = {"session": "s1", "ttl_ms": 10_000, "until": 1}
    seen: list[dict[str, Any]] = []
    with scripted([(503, SERVER_NO_QUORUM), (200, opened)], seen, no_quorum="retry") as kv:
        assert kv.open_session(10) == "s1"
    assert len(seen) == 2 and seen[0]["no_quorum"] == "retry"
    for policy in ("return", "fail"):  # "return" has no entry to carry the error
        with (scripted([(503, SERVER_NO_QUORUM)], [], no_quorum=policy) as kv,
              pytest.raises(NoQuorum)):
            kv.open_session(10)
    seen = []
    answers: list[tuple[int, dict[str, Any]]] = [
        (503, SERVER_NO_QUORUM), (200, {"session": "s1", "until": 5}),
               (503, SERVER_NO_QUORUM), (200, {"session": "s1", "closed": True})]
    with scripted(answers, seen) as kv:  # the client says "return"; these calls say retry
        assert kv.keep_alive("s1", no_quorum="retry") == 5
        assert kv.close_session("s1", no_quorum="retry") is True
    assert len(seen) == 4


def test_a_reads_no_quorum_does_not_say_a_change_may_have_been_decided() -> None:
    seen: list[dict[str, Any]] = []
    answers = [(503, SERVER_NO_QUORUM), (503, SERVER_NO_QUORUM), (503, SERVER_NO_QUORUM)]
    with scripted(answers, seen, no_quorum="fail") as kv:
        with pytest.raises(NoQuorum) as read:
            kv.get("k")
        with pytest.raises(NoQuorum) as watched:
            kv.watch("k", 1, timeout=1)
        with pytest.raises(NoQuorum) as written:
            kv.put("k", "v")
    for error in (read.value, watched.value):
        assert "may or may not" not in error.message and "changes nothing" in error.message
    assert "may or may not have been decided" in written.value.message


def test_real_cluster_round_trip_still_works(cluster: LocalCluster, dead: str) -> None:
    with Client([dead, cluster.url(0)], timeout=3.0) as kv:
        put = kv.put("client-k", "v", until=2**53)
        assert put.ok and put.found and put.bindings == {"until": 2**53}
        assert kv.get("client-k").value == "v"
        assert kv.delete("client-k", put.token).deleted



CHANGES: dict[str, Callable[[Client], Entry]] = {
    "put": lambda kv: kv.put("k", "v"),
    "delete": lambda kv: kv.delete("k", 1),
    "swap": lambda kv: kv.swap("k", "a", "b"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_is_never_sent_again_once_it_may_have_reached_a_node(change: str) -> None:
    """Sent again, a change is a new request that no node can tell from the first: a
    put could make a second generation after its first was deleted, a delete of a
    generation not made yet could end it after answering "not deleted" (issue 8), a
    swap that took effect would answer swapped: false. So once a try may have reached
    a node, a lost answer is an unknown outcome. A refused connection reached nothing,
    so that try is made again elsewhere, as for every call."""
    call = CHANGES[change]

    def client(failures: list[Exception], seen: list[dict[str, Any]],
               **options: Any) -> Client:
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(json.loads(request.content))
            if failures:
                raise failures.pop(0)
            return httpx.Response(200, json=entry_body(swapped=True, created=True,
                                                       deleted=True))

        kv = Client(["http://a.invalid:7001", "http://b.invalid:7001"], **options)
        kv._http = httpx.Client(transport=httpx.MockTransport(handler))
        return kv

    seen: list[dict[str, Any]] = []
    with client([httpx.ReadTimeout("late")], seen) as kv:
        lost = call(kv)
    assert len(seen) == 1 and not lost.ok and lost.error == "no_quorum"
    assert "not sent again" in lost.message
    for policy in ("fail", "retry"):
        with client([httpx.RemoteProtocolError("gone")], [], no_quorum=policy) as kv, \
                pytest.raises(NoQuorum, match="may or may not have been decided"):
            call(kv)
    seen = []
    with client([httpx.ConnectError("refused")], seen) as kv:
        assert call(kv).ok and len(seen) == 2
    seen = []
    with client([httpx.ReadTimeout("late")], seen) as kv:  # a read is simply asked again
        assert kv.get("k").ok and len(seen) == 2
    seen = []
    with scripted([(503, SERVER_NO_QUORUM)], seen, no_quorum="retry", timeout=100) as kv, \
            pytest.raises(NoQuorum):
        call(kv)  # the server gave up: not asked again, though "retry"
    assert len(seen) == 1


def test_an_election_outlives_a_lost_answer_to_its_put_or_its_delete() -> None:
    """The client sends neither change again once it may have arrived, so the recipe
    does: campaign puts again (first write wins, and its session shows a win), and
    resign reads again before it deletes again."""
    lost = {"/v1/put": 1, "/v1/delete": 1}
    holder = {"found": True}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        seen.append(path)
        if lost.get(path):
            lost[path] -= 1
            raise httpx.ReadTimeout("late")
        if path == "/v1/session/open":
            return httpx.Response(200, json={"session": "s1", "ttl_ms": 60_000, "until": 1})
        if path.startswith("/v1/session/"):
            return httpx.Response(200, json={"session": "s1", "until": 2, "closed": True})
        if path == "/v1/delete":
            holder["found"] = False
        found = holder["found"] or path == "/v1/put"
        return httpx.Response(200, json=entry_body(
            found, bindings={"pid": "s1"} if found else {}, deleted=True))

    kv = Client("http://node.invalid:7001", timeout=2.0)
    kv._http = httpx.Client(transport=httpx.MockTransport(handler))
    with kv, kv.session(ttl=60) as session:
        election = Election(kv, "k", "v", session)
        assert election.campaign(timeout=5).token == 1
        election.resign()
    changes = [p for p in seen if p in ("/v1/put", "/v1/get", "/v1/delete")]
    assert changes == ["/v1/put", "/v1/put", "/v1/get", "/v1/delete", "/v1/get",
                       "/v1/delete"]
    assert not holder["found"]


def test_a_campaign_still_fails_when_no_endpoint_answers() -> None:
    """Putting again after a lost answer must not hide an unreachable cluster."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/put":
            raise httpx.ConnectError("refused")
        return httpx.Response(200, json={"session": "s1", "ttl_ms": 60_000, "until": 1,
                                         "closed": True})

    kv = Client("http://node.invalid:7001", timeout=0.3)
    kv._http = httpx.Client(transport=httpx.MockTransport(handler))
    with kv, kv.session(ttl=60) as session, pytest.raises(Unreachable):
        Election(kv, "k", "v", session).campaign(timeout=5)
    assert "/v1/put" in seen
