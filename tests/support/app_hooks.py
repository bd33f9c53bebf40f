"""An application's hooks and signal receivers, as the end-to-end servers import them by dotted path
(REALTIME_CONNECT_HOOK, REALTIME_SUBSCRIBE_HOOK, REALTIME_PUBLISH_HOOK; tests/e2e/test_application_decides.py).

What each hook decides is keyed on names, so one server answers every case:

- connect (async): users `blocked*` are refused, `vip*` get a server-side channel `feed-<user>` and
  info, `slowconn*` make the hook outlive REALTIME_HOOK_TIMEOUT, `crashconn*` make it raise;
- subscribe (sync, on the hooks' thread pool): `room-<group>` and `private-room-<group>` are open to
  the members of the Django auth Group `<group>` (read through the ORM at each request), refused to
  everyone else with a reason naming the user, the group and the transport; `slow-*` sleeps past
  the timeout, `boom-*` raises, `veto-*` answers False;
- publish (async): `censored-*` content has "darn" replaced, `closed-*` is refused.

When APP_HOOKS_SIGNAL_LOG names a file, the connection signals are appended to it as JSON lines
(signal, connection_id, transport, pid, reaped, channel, code, user_id, channels, info), so a test
can count them across the processes of a cluster.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from streaming import signals
from streaming.hooks import Allow, HookContext, Refuse

SLOW_SECONDS = 3.0  # longer than the REALTIME_HOOK_TIMEOUT the tests set


async def on_connect(context: HookContext) -> Any:
    user = context.user_id or ""
    if user.startswith("blocked"):
        raise Refuse("account suspended")
    if user.startswith("vip"):
        return Allow(channels=[f"feed-{user}"], info={"tier": "gold", "user": user})
    if user.startswith("slowconn"):
        await asyncio.sleep(SLOW_SECONDS)
    if user.startswith("crashconn"):
        raise RuntimeError("the connect hook broke")
    return None


def on_subscribe(context: HookContext) -> Any:
    channel = context.channel or ""
    if channel.startswith("slow-"):
        time.sleep(SLOW_SECONDS)
        return None
    if channel.startswith("boom-"):
        raise RuntimeError("the subscribe hook broke")
    if channel.startswith("veto-"):
        return False
    if channel.startswith(("room-", "private-room-")):
        group = channel.split("room-", 1)[1]
        if context.user_id is None:
            return Refuse(f"sign in to join {group} (asked over {context.transport})")
        from django.contrib.auth.models import User

        if User.objects.filter(username=context.user_id, groups__name=group).exists():
            return Allow()
        return Refuse(f"{context.user_id} is not a member of {group} (asked over {context.transport})")
    return None


async def on_publish(context: HookContext) -> Any:
    channel = context.channel or ""
    if channel.startswith("closed-"):
        return Refuse("publishing is closed here")
    if channel.startswith("censored-") and isinstance(context.content, str):
        return Allow(content={"text": context.content.replace("darn", "****"), "censored_by": context.transport})
    return None


# -- signals -----------------------------------------------------------------------------------


def _record(signal: str, **fields: Any) -> None:
    path = os.environ.get("APP_HOOKS_SIGNAL_LOG")
    if not path:
        return
    line = json.dumps({"signal": signal, "pid": os.getpid(), **fields}, default=str) + "\n"
    with open(path, "a", encoding="utf-8") as log:  # one write per line: appends do not interleave
        log.write(line)


def on_connected(sender: str, connection_id: str, transport: str, identity: Any, ip: Any, info: Any, channels: Any,
                 **kwargs: Any) -> None:  # fmt: skip
    _record("connected", connection_id=connection_id, transport=transport, sender=sender,
            user_id=identity.user_id, channels=list(channels), info=info)  # fmt: skip


def on_disconnected(sender: str, connection_id: str, transport: str, identity: Any, code: int, reaped: bool,
                    **kwargs: Any) -> None:  # fmt: skip
    _record("disconnected", connection_id=connection_id, transport=transport, sender=sender,
            user_id=identity.user_id, code=code, reaped=reaped)  # fmt: skip


def on_subscribed(sender: str, connection_id: str, transport: str, identity: Any, channel: str,
                  **kwargs: Any) -> None:  # fmt: skip
    _record("subscribed", connection_id=connection_id, transport=transport, sender=sender, channel=channel)


def on_unsubscribed(sender: str, connection_id: str, transport: str, identity: Any, channel: str, reaped: bool,
                    **kwargs: Any) -> None:  # fmt: skip
    _record("unsubscribed", connection_id=connection_id, transport=transport, sender=sender, channel=channel,
            reaped=reaped)  # fmt: skip


if os.environ.get("APP_HOOKS_SIGNAL_LOG"):  # connected at import, which the server does at start-up
    signals.connected.connect(on_connected, dispatch_uid="app_hooks.connected")
    signals.disconnected.connect(on_disconnected, dispatch_uid="app_hooks.disconnected")
    signals.subscribed.connect(on_subscribed, dispatch_uid="app_hooks.subscribed")
    signals.unsubscribed.connect(on_unsubscribed, dispatch_uid="app_hooks.unsubscribed")
