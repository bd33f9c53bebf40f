"""Floor B of the HTTP publish scenario: a bare ASGI app that reads the whole request body and
answers 202 with a small JSON body (no framework, no parsing).

Usage: python -m daphne -b 127.0.0.1 -p PORT bench.peers.asgi_floor:app
"""

BODY = b'{"id":"00000000-0000-0000-0000-000000000000"}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        event = await receive()
        more = event.get("more_body", False)
    await send({"type": "http.response.start", "status": 202, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
