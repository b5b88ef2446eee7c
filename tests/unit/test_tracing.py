"""The trace context on Kafka headers and in the job row (fcl.contract.tracing): a record's
`traceparent` header, whatever bytes a producer put there, gives a short ASCII value or none, and
never an error; a well-formed one is continued (same trace id), a malformed one starts a new trace."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace

from fcl.contract import tracing

NAMES = st.one_of(st.just("traceparent"), st.text(max_size=20))
VALUES = st.one_of(st.binary(max_size=5000), st.text(max_size=5000), st.none(), st.integers())


@given(st.lists(st.tuples(NAMES, VALUES), max_size=6))
def test_any_headers_give_a_short_ascii_traceparent_or_none(headers: list[tuple[str, object]]) -> None:
    found = tracing.from_headers(headers)
    assert found is None or (found.isascii() and len(found) <= 100)
    context = tracing.context_of(found)  # never raises, whatever came in
    assert context is None or isinstance(trace.get_current_span(context), trace.Span)


def test_a_well_formed_traceparent_is_continued_and_a_malformed_one_is_not() -> None:
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    value = f"00-{trace_id}-{parent}-01"
    assert tracing.from_headers([("other", b"x"), ("traceparent", value.encode())]) == value
    assert tracing.from_headers({"traceparent": value}) == value
    span = trace.get_current_span(tracing.context_of(value))
    assert f"{span.get_span_context().trace_id:032x}" == trace_id
    for broken in ("00-zz-yy-01", "garbage", "00-" + "0" * 32 + "-" + parent + "-01"):
        context = tracing.context_of(broken)
        assert not trace.get_current_span(context).get_span_context().is_valid
    assert tracing.from_headers([("traceparent", "\xff\xfe".encode("latin-1"))]) is None
    assert tracing.headers_for(value) == [("traceparent", value.encode())] and tracing.headers_for(None) is None
