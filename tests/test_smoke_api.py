from tests.conftest import ACCEPT, request_doc
from tests.invariants import WAITING_PHASES


def test_request_and_accept(client):
    r = client.post("/requests", json=request_doc((2, 4)))
    assert r.status_code == 200, r.text
    offers = r.json()["offers"]
    assert r.json()["result"] == "YES" and len(offers) == 4
    r = client.post(f"/sessions/{offers[0]['meta']['uuid']}", json=ACCEPT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    r = client.get(f"/offersets/{r.json()['offerset']['uuid']}")
    phases = [o["phase"] for o in r.json()["offers"]]
    # the lifecycle engine may already have moved the accepted session on to WAITING
    assert phases[0] in WAITING_PHASES and phases[1:] == ["REJECTED"] * 3
