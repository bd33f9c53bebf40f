"""Decoding `text/event-stream` lines into events (WHATWG rules)."""

from __future__ import annotations

from realtime_client.sse_decoder import ServerSentEvent, SSEDecoder


def decode(lines: list[str]) -> tuple[list[ServerSentEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [event for line in lines if (event := decoder.decode(line)) is not None]
    return events, decoder


def test_decoder_reads_the_servers_stream_opening():
    events, decoder = decode(
        [
            "retry: 3000",
            "",
            "event: connected",
            'data: {"type":"connected"}',
            "",
            "event: news_update",
            "id: news:1",
            'data: {"offset":1}',
            "",
        ]
    )
    assert events == [
        ServerSentEvent("connected", '{"type":"connected"}', None),
        ServerSentEvent("news_update", '{"offset":1}', "news:1"),
    ]
    assert decoder.retry == 3000
    assert decoder.last_event_id == "news:1"


def test_decoder_joins_data_lines_and_defaults_the_event_name_to_message():
    events, _ = decode(["data: first", "data:second", "data", ""])
    assert events == [ServerSentEvent("message", "first\nsecond\n", None)]


def test_decoder_skips_comments_unknown_fields_and_blocks_without_data():
    events, decoder = decode([": keep-alive", "", "event: lonely", "", "bogus: 1", "data: x", ""])
    assert events == [ServerSentEvent("message", "x", None)]
    assert decoder.retry is None


def test_decoder_keeps_the_last_event_id_across_blocks_even_without_data():
    events, decoder = decode(["id: a:1", "data: one", "", "data: two", "", "id: a:2", ""])
    assert [event.id for event in events] == ["a:1", None]
    assert decoder.last_event_id == "a:2"


def test_decoder_ignores_ids_with_nul_and_retry_that_is_not_a_number():
    _, decoder = decode(["id: ok", "id: bad\0id", "retry: soon", "data: x", ""])
    assert decoder.last_event_id == "ok"
    assert decoder.retry is None


def test_decoder_strips_a_leading_byte_order_mark():
    events, _ = decode(["\ufeffdata: x", ""])
    assert events == [ServerSentEvent("message", "x", None)]
