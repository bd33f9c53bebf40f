"""Peer: the origin behind Pushpin for SSE. It answers each stream request with GRIP
instructions (hold the stream open, subscribe it to a channel) and an opening event; Pushpin
then holds the connections and fans out what is published to its HTTP publish endpoint.
Usage: python -m bench.peers.pushpin_origin PORT
"""

import sys
from urllib.parse import parse_qs, urlsplit

import uvloop
from aiohttp import web


async def stream(request: web.Request) -> web.Response:
    channel = parse_qs(urlsplit(str(request.rel_url)).query).get("channel", ["news"])[0]
    headers = {"Content-Type": "text/event-stream", "Grip-Hold": "stream", "Grip-Channel": channel}
    return web.Response(text="event: stream-open\ndata:\n\n", headers=headers)


if __name__ == "__main__":
    app = web.Application()
    app.router.add_get("/events/", stream)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, loop=uvloop.new_event_loop())
