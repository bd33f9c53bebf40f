"""Live models: a model's changes published to its channels, and snapshots with positions
(README, "Live models").

`register(Document, serializer=DocumentSerializer, channel="doc:{pk}", list_channel="docs")`
publishes `created` / `updated` / `deleted` envelopes whose content is
`{"model": "app.document", "pk": …, "data": <the serializer's output>}` to the object's channel
and to its list channel. They are persisted in the transaction that saves the object, so they
are delivered only once it commits (nothing for a rolled-back one), and a client recovers them
after a reconnect like any persisted message. `bulk_create`, `bulk_update` and `QuerySet.update`
send no signals: call `notify(objects, "created" | "updated")` after them.

Subscribing to (or reading the history or snapshot of) a live channel asks the registration's
`permission(user, obj)` (object channels) or `list_permission(user, **values)` (list channels);
by default Django's permission backends decide with the model's `view` permission (for an object,
the model-wide one or an object permission a backend such as django-guardian grants).

`snapshot(channel, load)` runs `load()` and reads the channel's position in one transaction, so a
client that renders the data and subscribes `since` that position misses nothing and sees nothing
twice; `channel_snapshot(channel)` is the snapshot of a registered channel, answered by the
WebSocket `snapshot` action and `GET /api/channels/<name>/snapshot/`.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_init, post_save, pre_delete

from streaming import protocol
from streaming.errors import Forbidden, NotFound, Unavailable

logger = logging.getLogger(__name__)

EVENTS = ("created", "updated", "deleted")
_VALUE = r"[A-Za-z0-9_.:@-]+"  # what a placeholder may stand for in a channel name


@dataclass(frozen=True)
class Snapshot:
    """The application's data for a channel and the channel's position read with it."""

    channel: str
    offset: int
    epoch: str
    data: Any
    has_more: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The wire shape: `{"channel", "offset", "epoch", "data", "has_more"}`."""
        return protocol.snapshot_page(self)


def snapshot(channel: str, load: Callable[[], Any], *, has_more: bool = False) -> Snapshot:
    """Run `load()` and read `channel`'s position (offset, epoch) in one transaction.

    For a view that renders its own data: a client given both subscribes with `since=offset` and
    `epoch` and receives exactly the messages published after what `load` read — provided every
    change to that data publishes (persisted) in the transaction that makes it, as live models do.
    `load` must read the data itself: what the caller read before this call is not covered.
    """
    from streaming import history

    protocol.validate_channel(channel)
    with transaction.atomic():
        offset, epoch = history.snapshot_position(channel)
        data = load()
    return Snapshot(channel, offset, epoch, data, has_more)


# ---------------------------------------------------------------------------------------------
# Channel templates


@dataclass(frozen=True)
class Template:
    """A channel name with `{field}` placeholders: `doc:{pk}`, `room:{room_id}:messages`."""

    text: str
    fields: tuple[str, ...]
    pattern: re.Pattern

    @classmethod
    def parse(cls, text: str) -> Template:
        parts, fields = [], []
        for literal, name, spec, conversion in string.Formatter().parse(text):
            parts.append(re.escape(literal))
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(f"channel template {text!r}: a placeholder is a field name, as in {{pk}}")
            if name in fields:
                raise ValueError(f"channel template {text!r} names {name!r} twice")
            fields.append(name)
            parts.append(f"(?P<{name}>{_VALUE})")
        example = text.format(**dict.fromkeys(fields, "1"))
        protocol.validate_channel(example)  # the literal parts are channel characters
        return cls(text, tuple(fields), re.compile("".join(parts)))

    def render(self, instance: models.Model) -> str | None:
        """The channel of an object (None when a field it is named by is null)."""
        values = {name: getattr(instance, _attname(type(instance), name)) for name in self.fields}
        if None in values.values():
            return None
        return self.text.format(**{name: _jsonable(value) for name, value in values.items()})

    def match(self, channel: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(channel)
        return found.groupdict() if found else None


# ---------------------------------------------------------------------------------------------
# Registrations


@dataclass
class LiveModel:
    """One registered model: where its changes go and who may read them."""

    model: type[models.Model]
    serializer: Any
    channel: Template
    list_channel: Template | None = None
    permission: Callable[[Any, models.Model], bool] | None = None
    list_permission: Callable[..., bool] | None = None
    queryset: Callable[[], models.QuerySet] | None = None
    label: str = ""
    _before: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)

    def objects(self) -> models.QuerySet:
        queryset = self.queryset() if self.queryset is not None else self.model._default_manager.all()
        return queryset if queryset.ordered else queryset.order_by("pk")

    def serialize(self, instance: models.Model) -> Any:
        return self.serializer(instance).data

    def content(self, instance: models.Model, data: Any) -> dict[str, Any]:
        return {"model": self.label, "pk": _jsonable(instance.pk), "data": data}

    def view_permission(self) -> str:
        return f"{self.model._meta.app_label}.view_{self.model._meta.model_name}"


_registry: list[LiveModel] = []


def register(
    model: type[models.Model],
    *,
    serializer: Any,
    channel: str | None = None,
    list_channel: str | None = None,
    permission: Callable[[Any, models.Model], bool] | None = None,
    list_permission: Callable[..., bool] | None = None,
    queryset: Callable[[], models.QuerySet] | None = None,
) -> LiveModel:
    """Publish `model`'s changes to its channels (see the module docstring).

    - `serializer`: a DRF serializer class; its output is the envelope's `data` and the snapshot.
    - `channel`: the object's channel, a template naming the pk or a unique field
      (default `<model_name>:{pk}`).
    - `list_channel`: optional; a fixed name (`docs`) or a template of the object's fields
      (`room:{room_id}`) — an object that moves between lists is `deleted` from the old one and
      `created` in the new one.
    - `permission(user, obj)`, `list_permission(user, **values)`: who may subscribe (Django's
      `view` permission by default); `user` is the Django user of the connection's user id, or
      an AnonymousUser. Admin connections (API keys, role admin) are not asked.
    - `queryset`: a callable giving the objects a list snapshot shows (default: all, by pk).

    Call it from an AppConfig's `ready()`. Clients may not publish to these channels.
    """
    meta = model._meta
    object_channel = Template.parse(channel or f"{meta.model_name}:{{pk}}")
    if len(object_channel.fields) != 1:
        raise ValueError(f"channel {object_channel.text!r}: an object channel names one field, the pk or a unique one")
    (key,) = object_channel.fields
    if key != "pk" and not meta.get_field(key).unique:
        raise ValueError(f"channel {object_channel.text!r}: {key!r} is not a unique field of {meta.label}")
    listed = Template.parse(list_channel) if list_channel else None
    for name in listed.fields if listed else ():
        meta.get_field(name)  # FieldDoesNotExist names a wrong one
    if any(live.model is model for live in _registry):
        raise ValueError(f"{meta.label} is already registered as a live model")
    live = LiveModel(
        model, serializer, object_channel, listed, permission, list_permission, queryset, meta.label_lower
    )  # fmt: skip
    _registry.append(live)
    uid = f"streaming.live:{meta.label_lower}"
    post_save.connect(_saved, sender=model, weak=False, dispatch_uid=uid)
    pre_delete.connect(_deleting, sender=model, weak=False, dispatch_uid=uid)
    if listed and listed.fields:
        post_init.connect(_loaded, sender=model, weak=False, dispatch_uid=uid)
    return live


def unregister(model: type[models.Model]) -> None:
    """Stop publishing `model`'s changes (tests)."""
    uid = f"streaming.live:{model._meta.label_lower}"
    post_save.disconnect(sender=model, dispatch_uid=uid)
    pre_delete.disconnect(sender=model, dispatch_uid=uid)
    post_init.disconnect(sender=model, dispatch_uid=uid)
    _registry[:] = [live for live in _registry if live.model is not model]


def registration(model: type[models.Model]) -> LiveModel | None:
    return next((live for live in _registry if live.model is model), None)


def resolve(channel: str) -> tuple[LiveModel, bool, dict[str, str]] | None:
    """The registration a channel belongs to: (live model, is its list channel, placeholder values)."""
    for live in _registry:
        values = live.channel.match(channel)
        if values is not None:
            return live, False, values
        if live.list_channel is not None:
            values = live.list_channel.match(channel)
            if values is not None:
                return live, True, values
    return None


def is_live_channel(channel: str) -> bool:
    """Whether a channel carries a live model's changes (clients may not publish there)."""
    return bool(_registry) and resolve(channel) is not None


# ---------------------------------------------------------------------------------------------
# Publishing changes


_LIST_VALUES = "_streaming_live_list"


def _loaded(sender: type[models.Model], instance: models.Model, **_: Any) -> None:
    """Remember the fields a list channel is named by, as loaded, to tell a move between lists."""
    live = registration(sender)
    if live is not None and live.list_channel is not None:
        instance.__dict__[_LIST_VALUES] = _list_values(live, instance)


def _attname(model: type[models.Model], name: str) -> str:
    return model._meta.pk.attname if name == "pk" else model._meta.get_field(name).attname


def _saved(sender: type[models.Model], instance: models.Model, created: bool, raw: bool = False, **_: Any) -> None:
    if raw:  # loaddata
        return
    live = registration(sender)
    if live is not None:
        _publish(live, [instance], "created" if created else "updated")


def _deleting(sender: type[models.Model], instance: models.Model, **_: Any) -> None:
    # Inside the deletion's transaction: a delete that fails rolls the message back with it.
    live = registration(sender)
    if live is not None:
        _publish(live, [instance], "deleted")


def notify(objects: Iterable[models.Model], event: str) -> int:
    """Publish `event` ("created", "updated" or "deleted") for objects changed without signals —
    after `bulk_create` ("created"), `bulk_update` or `QuerySet.update` ("updated": pass the
    objects again, e.g. the same queryset, so they are read as they are now). Call it in the
    transaction that made the change to keep snapshots exact. Returns how many were published."""
    if event not in EVENTS:
        raise ValueError(f"event is one of {', '.join(EVENTS)}, not {event!r}")
    by_model: dict[type[models.Model], list[models.Model]] = {}
    for instance in objects:
        by_model.setdefault(type(instance), []).append(instance)
    count = 0
    for model, instances in by_model.items():
        live = registration(model)
        if live is None:
            raise ValueError(f"{model._meta.label} is not registered as a live model")
        _publish(live, instances, event)
        count += len(instances)
    return count


def _publish(live: LiveModel, instances: list[models.Model], event: str) -> None:
    from streaming.services import Publish, publish_batch

    batch = []
    for instance in instances:
        content = live.content(instance, live.serialize(instance))
        batch.append(Publish(live.channel.render(instance), content, event, persist=True))
        if live.list_channel is None:
            continue
        now = live.list_channel.render(instance)
        before = _list_before(live, instance) if event == "updated" else None
        if before is not None and before != now:
            batch.append(Publish(before, content, "deleted", persist=True))  # it left that list
            if now is not None:
                batch.append(Publish(now, content, "created", persist=True))
        elif now is not None:
            batch.append(Publish(now, content, event, persist=True))
        if event != "deleted":
            instance.__dict__[_LIST_VALUES] = _list_values(live, instance)
    publish_batch(batch)


def _list_values(live: LiveModel, instance: models.Model) -> dict[str, Any]:
    # From __dict__: a deferred field is not loaded for this (it counts as unknown).
    return {name: instance.__dict__.get(_attname(live.model, name)) for name in live.list_channel.fields}


def _list_before(live: LiveModel, instance: models.Model) -> str | None:
    values = instance.__dict__.get(_LIST_VALUES)
    if not values or None in values.values():
        return None
    return live.list_channel.text.format(**{name: _jsonable(value) for name, value in values.items()})


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, int | str) or value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Who may read a live channel, and its snapshot


def user_of(identity: Any) -> Any:
    """The Django user of an identity's user id (an AnonymousUser when there is none)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import AnonymousUser
    from django.core.exceptions import ValidationError

    if identity.user_id is None:
        return AnonymousUser()
    try:
        user = get_user_model()._default_manager.filter(pk=identity.user_id).first()
    except (ValueError, TypeError, ValidationError):  # a token's `sub` that is no pk of this model
        user = None
    return user if user is not None else AnonymousUser()


def authorize(identity: Any, channel: str) -> None:
    """Raise Forbidden (or NotFound for an object that does not exist) unless `identity` may read
    `channel`, when it is a live channel (sync: it reads the database)."""
    if not _registry:
        return
    found = resolve(channel)
    if found is None or identity.is_admin:
        return
    live, listed, values = found
    _check(live, listed, values, user_of(identity))


def _check(live: LiveModel, listed: bool, values: dict[str, str], user: Any) -> models.Model | None:
    if listed:
        if live.list_permission is not None:
            allowed = _ask(live, live.list_permission, user, **values)
        else:
            allowed = user.has_perm(live.view_permission())
        if not allowed:
            raise Forbidden(f"Not allowed to follow the list of {live.label} on this channel.")
        return None
    instance = _object(live, values)
    if live.permission is not None:
        allowed = _ask(live, live.permission, user, instance)
    else:
        allowed = user.has_perm(live.view_permission()) or user.has_perm(live.view_permission(), instance)
    if not allowed:
        raise Forbidden(f"Not allowed to follow this {live.model._meta.verbose_name}.")
    return instance


def _ask(live: LiveModel, permission: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
    """A registration's permission callable; one that raises refuses that request only."""
    try:
        return bool(permission(*args, **kwargs))
    except Exception:
        logger.exception("the permission check of live model %s failed", live.label)
        raise Unavailable(f"The permission check of {live.label} failed.") from None


def _object(live: LiveModel, values: dict[str, str]) -> models.Model:
    from django.core.exceptions import ValidationError

    ((name, value),) = values.items()
    try:
        instance = live.model._default_manager.filter(**{name: value}).first()
    except (ValueError, TypeError, ValidationError):
        instance = None
    if instance is None:
        raise NotFound(f"No {live.model._meta.verbose_name} {value!r}: it was deleted or never existed.")
    return instance


def channel_snapshot(channel: str) -> Snapshot:
    """The snapshot of a live channel (sync): the object's serialized data, or the first
    LIVE_SNAPSHOT_MAX_ITEMS objects of its list, with the channel's position read in the same
    transaction. NotFound when the channel is no live channel or its object does not exist.
    The caller authorizes the reader first, as for a subscription (`authorize`)."""
    protocol.validate_channel(channel)
    found = resolve(channel)
    if found is None:
        raise NotFound(f"Channel {channel!r} has no snapshot: it is not a live model channel.")
    live, listed, values = found
    with transaction.atomic():
        offset, epoch = _position(channel)
        if not listed:
            return Snapshot(channel, offset, epoch, live.serialize(_object(live, values)))
        limit = settings.REALTIME.live_snapshot_max_items
        page = list(live.objects().filter(**values)[: limit + 1])
        return Snapshot(channel, offset, epoch, [live.serialize(item) for item in page[:limit]], len(page) > limit)


def _position(channel: str) -> tuple[int, str]:
    from streaming import history

    return history.snapshot_position(channel)
