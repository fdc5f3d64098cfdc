"""The overbooking checker itself (tests/invariants.py), which the tests and
bench/bench_requests.py share: on small tables whose answer is known."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from tests.invariants import find_overbookings, overbookings

CAPACITY = 10


@pytest.fixture
def conn() -> Iterator[sa.Connection]:
    """The columns the checker reads, of one pool (id 1) of 10 cores."""
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE inventory (pool_id INT, resource_class TEXT, total INT, "
            "reserved INT, allocation_ratio FLOAT)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE booking (id INT, start_at INT, end_at INT, state TEXT, "
            "offerset_uuid TEXT)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE allocation (booking_id INT, pool_id INT, resource_class TEXT, amount INT)"
        )
        conn.exec_driver_sql(
            "INSERT INTO inventory VALUES (1, 'cores', 12, 2, 1.0), (1, 'memory', 40, 0, 1.0)"
        )
        yield conn
    engine.dispose()


def book(conn: sa.Connection, *bookings: tuple[int, int, int, str, str]) -> None:
    for booking, (start, end, amount, state, offerset) in enumerate(bookings, start=1):
        conn.execute(
            sa.text("INSERT INTO booking VALUES (:id, :start, :end, :state, :offerset)"),
            {"id": booking, "start": start, "end": end, "state": state, "offerset": offerset},
        )
        conn.execute(
            sa.text("INSERT INTO allocation VALUES (:id, 1, 'cores', :amount)"),
            {"id": booking, "amount": amount},
        )


def test_the_holds_of_one_offer_set_count_once_with_their_largest(conn):
    """Alternatives may overlap each other: 6 firm + the largest of 4 and 3 fits in 10."""
    book(conn, (0, 100, 6, "CONFIRMED", "a" * 36), (0, 50, 4, "HELD", "b" * 36),
         (20, 80, 3, "HELD", "b" * 36))  # fmt: skip
    assert overbookings(conn) == []


def test_the_holds_of_two_offer_sets_add_up(conn):
    book(conn, (0, 100, 6, "ACTIVE", "a" * 36), (0, 50, 3, "HELD", "b" * 36),
         (40, 60, 2, "HELD", "c" * 36), (70, 90, 2, "RELEASED", "d" * 36))  # fmt: skip
    [found] = find_overbookings(conn)
    assert (found.pool, found.resource_class, found.at) == (1, "cores", 40)
    assert (found.firm, found.holds, found.used, found.capacity) == (6, [2, 3], 11, CAPACITY)
    assert [b[0] for b in found.bookings] == [1, 2, 3]
    assert str(found).startswith("pool 1 cores at 40: 11 in use > capacity 10 (firm 6")


def test_every_breakpoint_over_capacity_is_one_overbooking(conn):
    """Each instant where usage changes and stays over capacity counts, as the benchmark
    counts them; a booking that ends where another starts does not overlap it."""
    book(conn, (0, 100, 8, "CONFIRMED", "a" * 36), (10, 30, 3, "CONFIRMED", "b" * 36),
         (20, 40, 1, "CONFIRMED", "c" * 36), (40, 50, 2, "CONFIRMED", "d" * 36),
         (50, 60, 5, "HELD", "e" * 36))  # fmt: skip
    assert [(o.at, o.used) for o in find_overbookings(conn)] == [(10, 11), (20, 12), (50, 13)]


def test_a_booking_of_no_length_claims_nothing(conn):
    book(conn, (0, 100, 10, "CONFIRMED", "a" * 36), (50, 50, 5, "CONFIRMED", "b" * 36))
    assert overbookings(conn) == []


def test_given_capacities_replace_the_inventory(conn):
    book(conn, (0, 100, 10, "CONFIRMED", "a" * 36))
    assert overbookings(conn) == []
    assert len(overbookings(conn, {(1, "cores"): 9})) == 1
