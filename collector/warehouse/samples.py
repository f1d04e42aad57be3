"""Deterministic sample sessions of readers, listeners and viewers.

Each user keeps their place across sessions. Readers open a book and turn its pages in
order, finishing chapters on the way. Listeners and viewers play and pause, and their
positions only move forward. Some users buy a subscription, a book or an audiobook, in the
currency of their locale. Some sessions end abruptly (no ``session_end``).

Two output formats:

- ``client``: what a tracker posts, one event per line, with true event times and no
  ``sent_at``. ``collector send`` adds the batch ``sent_at`` from its own clock, so the
  collector's skew correction keeps these times.
- ``raw``: the rows the collector would have written, built with
  ``collector.enrich.build_row``. Besides what ``client`` has, these include what only a
  server sees: devices with skewed clocks (corrected through ``sent_at``), batches that
  arrive hours late, retried batches (the same events received twice) and crawlers, which
  the collector flags with ``is_bot``.

The same seed, user count, day count and end time always give the same bytes.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from collector.enrich import RequestContext, build_row, encode_row, is_bot, truncate_ip
from collector.models import EVENT_ADAPTER

SampleFormat = Literal["raw", "client"]
Platform = Literal["web", "ios", "android"]

KEY_ID = "sample"
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=30)
# A tracker flushes its queue after this many events, and at the end of a session.
EVENTS_PER_BATCH = 6


@dataclass(frozen=True)
class Title:
    """A book, audiobook or video in the sample catalog."""

    content_id: str
    content_type: Literal["book", "audio", "video"]
    title: str
    author: str
    genre: str
    chapters: int = 1
    pages: int | None = None
    seconds: float | None = None

    def content(self) -> dict[str, Any]:
        content: dict[str, Any] = {
            "content_id": self.content_id,
            "content_type": self.content_type,
            "title": self.title,
            "author": self.author,
            "genre": self.genre,
        }
        if self.pages is not None:
            content["page_count"] = self.pages
        if self.seconds is not None:
            content["duration_seconds"] = self.seconds
        return content


CATALOG = (
    Title("bk-harbor-lights", "book", "Harbor Lights", "Mira Okafor", "mystery", 4, pages=24),
    Title("bk-salt-and-iron", "book", "Salt and Iron", "Tomas Reyes", "fantasy", 5, pages=40),
    Title("bk-quiet-orbit", "book", "A Quiet Orbit", "Lena Park", "science fiction", 3, pages=18),
    Title("bk-field-notes", "book", "Field Notes on Bees", "Ada Lind", "nature", 6, pages=60),
    Title("au-long-road", "audio", "The Long Road Home", "Sam Kiplagat", "memoir", 4, seconds=2400),
    Title("au-deep-work", "audio", "Habits of Deep Work", "R. Anand", "self-help", 3, seconds=1800),
    Title("au-night-ferry", "audio", "Night Ferry", "Mira Okafor", "mystery", 5, seconds=3000),
    Title("vd-bookbinding", "video", "Bookbinding Basics", "Craft Club", "how-to", seconds=540),
    Title(
        "vd-author-talk",
        "video",
        "Author Talk: Lena Park",
        "Library Live",
        "interview",
        seconds=1500,
    ),
    Title("vd-trailer", "video", "Salt and Iron Trailer", "Northwind", "trailer", seconds=120),
)

PLANS = {"monthly": 1, "annual": 10}
# Price of the monthly plan, a book and an audiobook, per currency (JPY has no decimals).
PRICES = {
    "USD": ("9.99", "12.99", "19.99"),
    "EUR": ("8.99", "11.50", "17.90"),
    "GBP": ("7.99", "9.99", "15.49"),
    "JPY": ("1200", "1500", "2400"),
}
LOCALES = (
    ("en-US", "America/New_York", "USD"),
    ("en-GB", "Europe/London", "GBP"),
    ("de-DE", "Europe/Berlin", "EUR"),
    ("fr-FR", "Europe/Paris", "EUR"),
    ("ja-JP", "Asia/Tokyo", "JPY"),
)
USER_AGENTS = {
    "web": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36",
    "ios": "BookMedia/3.4.0 (iPhone; iOS 17.5)",
    "android": "BookMedia/3.4.0 (Linux; Android 14; Pixel 8)",
}
BOT_AGENTS = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
)


@dataclass
class User:
    """A sample user: identity, device, locale and reading progress."""

    user_id: str | None
    anonymous_id: str
    platform: Platform
    locale: str
    timezone: str
    currency: str
    user_agent: str
    client_ip: str
    clock_skew: timedelta = timedelta(0)
    is_crawler: bool = False
    progress: dict[str, float] = field(default_factory=dict)


@dataclass
class Delivery:
    """One request as the collector would receive it: events, sent_at and received_at."""

    events: list[dict[str, Any]]
    sent_at: datetime
    received_at: datetime
    user: User


@dataclass(frozen=True)
class SampleConfig:
    """Sample parameters: ``days`` days of activity ending at ``end`` (exclusive, UTC)."""

    end: datetime
    users: int = 30
    days: int = 3
    seed: int = 7

    def __post_init__(self) -> None:
        if self.end.tzinfo is None:
            raise ValueError("end must carry a time zone, for example datetime(..., tzinfo=UTC)")
        if self.users < 1 or self.days < 1:
            raise ValueError(f"users and days must be >= 1, got {self.users} and {self.days}")


def generate(config: SampleConfig, output: SampleFormat = "raw") -> list[bytes]:
    """Return the sample as NDJSON lines (without newlines) in ``output`` format.

    Raw rows are ordered by received_at, client events by occurred_at. Every event is
    validated with ``collector.models.EVENT_ADAPTER`` on the way.
    """
    # Activity and delivery draw from separate generators, so that both formats describe
    # the same sessions and only the raw format adds what happens on the way.
    rng = random.Random(config.seed)  # noqa: S311  # nosec B311  # sample data, not a secret
    network = random.Random(f"{config.seed}:delivery")  # noqa: S311  # nosec B311
    start = config.end - timedelta(days=config.days)
    users = _make_users(rng, config.users)
    deliveries: list[Delivery] = []
    for user in users:
        for session in _user_sessions(rng, user, start, config.end):
            deliveries.extend(_batches(network, user, session, config.end))
    if output == "client":
        # A client event carries no request User-Agent, so a crawler would look human there.
        return _client_lines([delivery for delivery in deliveries if not delivery.user.is_crawler])
    return _raw_lines(deliveries)


def _client_lines(deliveries: list[Delivery]) -> list[bytes]:
    """Return each event once, with its true time and no sent_at."""
    events = {}
    for delivery in deliveries:
        for event in delivery.events:
            events[event["event_id"]] = dict(event, occurred_at=_text(event["occurred_at"]))
    lines = []
    for event in sorted(events.values(), key=lambda item: (item["occurred_at"], item["event_id"])):
        line = orjson.dumps(event)
        EVENT_ADAPTER.validate_json(line)
        lines.append(line)
    return lines


def _raw_lines(deliveries: list[Delivery]) -> list[bytes]:
    """Return the rows the collector would write; client times read the device's clock."""
    rows = []
    for delivery in deliveries:
        user = delivery.user
        skew = user.clock_skew
        request = RequestContext(
            received_at=delivery.received_at,
            key_id=KEY_ID,
            client_ip=truncate_ip(user.client_ip, "truncate"),
            user_agent=user.user_agent,
            is_bot=is_bot(user.user_agent),
        )
        for event in delivery.events:
            as_sent = dict(event, occurred_at=_text(event["occurred_at"] + skew))
            model = EVENT_ADAPTER.validate_json(orjson.dumps(as_sent))
            row = build_row(model, delivery.sent_at + skew, request, MAX_FUTURE, MAX_PAST)
            rows.append((row["received_at"], row["event_id"], encode_row(row)))
    rows.sort()
    return [line for _, _, line in rows]


def _make_users(rng: random.Random, count: int) -> list[User]:
    users = []
    for number in range(1, count + 1):
        platform: Platform = rng.choice(("web", "web", "ios", "android"))
        locale, timezone, currency = rng.choice(LOCALES)
        skew = timedelta(0)
        if rng.random() < 0.15:
            # A device whose clock is off by half a minute up to three hours, either way.
            skew = timedelta(seconds=rng.choice((-1, 1)) * rng.randint(30, 3 * 3600))
        users.append(
            User(
                user_id=f"user-{number:04d}" if rng.random() < 0.7 else None,
                anonymous_id=f"device-{_hex(rng, 12)}",
                platform=platform,
                locale=locale,
                timezone=timezone,
                currency=currency,
                user_agent=USER_AGENTS[platform],
                client_ip=f"198.51.100.{rng.randint(1, 254)}",
                clock_skew=skew,
                progress=_earlier_progress(rng),
            )
        )
    for number in range(max(1, count // 15)):
        users.append(
            User(
                user_id=None,
                anonymous_id=f"crawler-{number + 1}",
                platform="web",
                locale="en-US",
                timezone="UTC",
                currency="USD",
                user_agent=BOT_AGENTS[number % len(BOT_AGENTS)],
                client_ip=f"203.0.113.{10 + number}",
                is_crawler=True,
            )
        )
    return users


def _earlier_progress(rng: random.Random) -> dict[str, float]:
    """Return where a user left off before the sample starts, for one title or none."""
    if rng.random() < 0.5:
        return {}
    title = rng.choice(CATALOG)
    if title.pages is not None:
        return {title.content_id: float(rng.randint(1, title.pages - 2))}
    assert title.seconds is not None
    return {title.content_id: round(title.seconds * rng.uniform(0.3, 0.9), 1)}


def _user_sessions(
    rng: random.Random, user: User, start: datetime, end: datetime
) -> list[list[dict[str, Any]]]:
    sessions = []
    day = start
    while day < end:
        count = rng.choice((0, 0, 1, 1, 1)) if not user.is_crawler else rng.randint(0, 1)
        for _ in range(count):
            begin = day + timedelta(seconds=rng.randint(0, 86_399))
            events = [event for event in _session(rng, user, begin) if event["occurred_at"] < end]
            if events:
                sessions.append(events)
        day += timedelta(days=1)
    return sessions


def _session(rng: random.Random, user: User, begin: datetime) -> list[dict[str, Any]]:
    """Return one session's events with true (server clock) times in ``occurred_at``."""
    session_id = f"s-{_hex(rng, 16)}"
    clock = _Clock(begin)
    events = [_event(rng, user, session_id, clock.now, "session_start", {})]
    if user.is_crawler:
        activities = [rng.choice([title for title in CATALOG if title.content_type == "book"])]
    else:
        activities = rng.sample(_favourites(user), k=rng.choice((1, 1, 1, 2)))
        started = [title for title in CATALOG if title.content_id in user.progress]
        if started and rng.random() < 0.6:
            activities = [rng.choice(started)]  # Carries on with something already begun.
    for title in activities:
        events.extend(_activity(rng, user, session_id, clock, title))
    if not user.is_crawler and rng.random() < 0.15:
        events.append(_purchase(rng, user, session_id, clock))
    if user.is_crawler or rng.random() >= 0.15:
        seconds = (clock.now - begin).total_seconds() + rng.randint(1, 20)
        clock.advance(seconds=rng.randint(1, 20))
        events.append(
            _event(rng, user, session_id, clock.now, "session_end", {"duration_seconds": seconds})
        )
    return events


def _favourites(user: User) -> list[Title]:
    # Each user leans towards the media of their platform: apps listen more, web reads more.
    weights = {"web": ("book", "video"), "ios": ("audio", "book"), "android": ("video", "audio")}
    preferred = weights[user.platform]
    return [
        title
        for title in CATALOG
        if title.content_type in preferred or title.content_id in user.progress
    ]


def _activity(
    rng: random.Random, user: User, session_id: str, clock: _Clock, title: Title
) -> list[dict[str, Any]]:
    if title.content_type == "book":
        return _reading(rng, user, session_id, clock, title)
    return _playback(rng, user, session_id, clock, title)


def _reading(
    rng: random.Random, user: User, session_id: str, clock: _Clock, title: Title
) -> list[dict[str, Any]]:
    assert title.pages is not None
    page = int(user.progress.get(title.content_id, 0))
    if page >= title.pages:
        page = 0  # Read it again from the start.

    opened: dict[str, Any] = {"format": rng.choice(("epub", "pdf", "web"))}
    if page > 0:
        opened["resume_page"] = page
    clock.advance(seconds=rng.randint(2, 30))
    events = [_event(rng, user, session_id, clock.now, "book_opened", opened, title)]

    pages_per_chapter = title.pages // title.chapters
    turns = rng.randint(3, 7) if rng.random() < 0.75 else rng.randint(8, 20)
    for _ in range(turns):
        if page >= title.pages:
            break
        page += 1
        seconds_on_page = 1.5 if user.is_crawler else float(rng.randint(20, 150))
        clock.advance(seconds=seconds_on_page)
        turned = {
            "page_number": page,
            "page_count": title.pages,
            "direction": "forward",
            "seconds_on_page": seconds_on_page,
        }
        events.append(_event(rng, user, session_id, clock.now, "page_turned", turned, title))
        at_chapter_end = page % pages_per_chapter == 0 or page == title.pages
        chapter = min(title.chapters, -(-page // pages_per_chapter))
        if at_chapter_end and (page == title.pages or chapter < title.chapters):
            clock.advance(seconds=1)
            completed = {"chapter_index": chapter, "chapter_count": title.chapters}
            events.append(
                _event(rng, user, session_id, clock.now, "chapter_completed", completed, title)
            )

    user.progress[title.content_id] = page
    return events


def _playback(
    rng: random.Random, user: User, session_id: str, clock: _Clock, title: Title
) -> list[dict[str, Any]]:
    assert title.seconds is not None
    kind = title.content_type
    position = user.progress.get(title.content_id, 0.0)
    if position >= title.seconds:
        position = 0.0
    rate = rng.choice((1.0, 1.0, 1.25, 1.5)) if kind == "audio" else 1.0
    chapter_seconds = title.seconds / title.chapters
    events = []
    for _ in range(rng.randint(1, 2)):
        if position >= title.seconds:
            break
        clock.advance(seconds=rng.randint(3, 60))
        played = _playback_properties(kind, position, title.seconds, rate)
        events.append(_event(rng, user, session_id, clock.now, f"{kind}_played", played, title))
        listened = min(title.seconds - position, float(rng.randint(60, 900)))
        if rng.random() < 0.35:
            listened = title.seconds - position  # Stays to the end.
        previous = position
        position = round(position + listened, 1)
        clock.advance(seconds=listened / rate)
        if kind == "audio":
            for chapter in range(1, title.chapters + 1):
                if previous < chapter * chapter_seconds <= position:
                    completed = {"chapter_index": chapter, "chapter_count": title.chapters}
                    events.append(
                        _event(
                            rng, user, session_id, clock.now, "chapter_completed", completed, title
                        )
                    )
        paused = _playback_properties(kind, position, title.seconds, rate)
        events.append(_event(rng, user, session_id, clock.now, f"{kind}_paused", paused, title))
    user.progress[title.content_id] = position
    return events


def _playback_properties(
    kind: str, position: float, duration: float, rate: float
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "position_seconds": position,
        "duration_seconds": duration,
        "playback_rate": rate,
    }
    if kind == "video":
        properties["quality"] = "1080p"
    return properties


def _purchase(rng: random.Random, user: User, session_id: str, clock: _Clock) -> dict[str, Any]:
    monthly, book, audiobook = PRICES[user.currency]
    product_type = rng.choice(("subscription", "subscription", "book", "audiobook"))
    properties: dict[str, Any] = {
        "order_id": f"order-{_hex(rng, 10)}",
        "product_type": product_type,
        "currency": user.currency,
    }
    if product_type == "subscription":
        plan = rng.choice(tuple(PLANS))
        properties["plan"] = plan
        properties["amount"] = _times(monthly, PLANS[plan])
    else:
        properties["amount"] = book if product_type == "book" else audiobook
    clock.advance(seconds=rng.randint(20, 120))
    # Purchases are usually sent by the shop's server, which does not know the session.
    session = session_id if rng.random() < 0.5 else None
    return _event(rng, user, session, clock.now, "purchase", properties)


def _times(amount: str, factor: int) -> str:
    whole, _, fraction = amount.partition(".")
    cents = int(whole) * 100 + int((fraction or "0").ljust(2, "0"))
    total = cents * factor
    return f"{total // 100}.{total % 100:02d}" if fraction else str(total // 100)


def _batches(
    rng: random.Random, user: User, events: list[dict[str, Any]], end: datetime
) -> list[Delivery]:
    """Group a session into requests, with the device's clock skew, lateness and retries."""
    late = timedelta(0)
    if rng.random() < 0.06:
        late = timedelta(minutes=rng.randint(30, 20 * 60))  # The device was offline.
    deliveries = []
    for first in range(0, len(events), EVENTS_PER_BATCH):
        batch = events[first : first + EVENTS_PER_BATCH]
        last = batch[-1]["occurred_at"]
        send = last + timedelta(seconds=rng.randint(1, 5)) + late
        if send >= end:
            send = max(last, end - timedelta(seconds=1))
        received = send + timedelta(milliseconds=rng.randint(40, 400))
        deliveries.append(Delivery(batch, send, received, user))
        if rng.random() < 0.03:
            # The response was lost, so the tracker sent the same batch again.
            resend = send + timedelta(seconds=rng.randint(2, 30))
            deliveries.append(Delivery(batch, resend, resend + timedelta(milliseconds=90), user))
    return deliveries


def _event(
    rng: random.Random,
    user: User,
    session_id: str | None,
    occurred_at: datetime,
    event_name: str,
    properties: dict[str, Any],
    title: Title | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "event_name": event_name,
        "occurred_at": occurred_at,
        "user_id": user.user_id,
        "anonymous_id": user.anonymous_id,
    }
    if session_id is not None:
        event["session_id"] = session_id
    if title is not None:
        event["content"] = title.content()
    event["context"] = _context(user)
    event["properties"] = properties
    return event


def _context(user: User) -> dict[str, Any]:
    context: dict[str, Any] = {
        "locale": user.locale,
        "timezone": user.timezone,
        "platform": user.platform,
    }
    if user.platform == "web":
        context["page_url"] = "https://read.example.com/library"
    else:
        context["app_version"] = "3.4.0"
    return context


def _text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _hex(rng: random.Random, length: int) -> str:
    return f"{rng.getrandbits(length * 4):0{length}x}"


class _Clock:
    """The true time within a session, moving forward only."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
