"""Per-click facts and the pieces of the redirect that need no database: device classes,
countries, bot signals, the per-address rate, click ids, URL templates, sub parameters."""

from __future__ import annotations

import pytest

from server.clicks.redirect import parse_subs
from server.clicks.routing import CLICK_MACROS, compile_template, render_url
from server.clicks.traffic import (
    ClickIds,
    RateCounter,
    address_hasher,
    bot_reason,
    client_address,
    country_code,
    device_class,
)


@pytest.mark.parametrize(
    "agent, device",
    [
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "desktop"),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/131.0 Mobile Safari/537.36", "mobile"),
        ("Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 Chrome/131.0 Safari/537.36", "tablet"),
        ("Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15", "tablet"),
        ("", "desktop"),
    ],
)
def test_device_classes(agent: str, device: str) -> None:
    assert device_class(agent) == device


def test_countries_are_two_letter_codes() -> None:
    assert country_code("fr") == "FR" and country_code("DE") == "DE"
    assert country_code(None) is None and country_code("") is None
    assert country_code("XX") is None and country_code("T1") is None  # Cloudflare: unknown, Tor
    assert country_code("FRA") is None and country_code("1A") is None


def test_bot_signals() -> None:
    human = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"
    assert bot_reason({"REQUEST_METHOD": "GET"}, human) is None
    assert bot_reason({"REQUEST_METHOD": "HEAD"}, human) == "head_request"
    assert bot_reason({"REQUEST_METHOD": "GET", "HTTP_SEC_PURPOSE": "prefetch;prerender"}, human) == "prefetch"
    assert bot_reason({"REQUEST_METHOD": "GET", "HTTP_X_MOZ": "prefetch"}, human) == "prefetch"
    assert bot_reason({"REQUEST_METHOD": "GET"}, "") == "no_user_agent"
    for agent in ("Googlebot/2.1", "facebookexternalhit/1.1", "python-requests/2.32", "curl/8.5.0", "Slackbot 1.0"):
        assert bot_reason({"REQUEST_METHOD": "GET"}, agent) == "crawler_user_agent", agent


def test_the_rate_counter_slides_over_a_minute() -> None:
    now = [0.0]
    counter = RateCounter(3, clock=lambda: now[0])
    assert [counter.over_limit("a") for _ in range(4)] == [False, False, False, True]
    assert counter.over_limit("b") is False
    now[0] = 90.0  # half of the previous minute still overlaps: 4 * 0.5 + 1 = 3
    assert counter.over_limit("a") is False
    assert counter.over_limit("a") is True
    now[0] = 300.0  # long gap: forgotten
    assert counter.over_limit("a") is False
    assert RateCounter(0).over_limit("a") is False  # 0 turns it off


def test_addresses_and_their_hashes() -> None:
    assert client_address({"REMOTE_ADDR": "10.0.0.1"}, None) == "10.0.0.1"
    environ = {"REMOTE_ADDR": "10.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.1"}
    assert client_address(environ, "HTTP_X_FORWARDED_FOR") == "203.0.113.9"
    one, other = address_hasher("k" * 40), address_hasher("j" * 40)
    assert one("203.0.113.9") == one("203.0.113.9") != other("203.0.113.9")
    assert len(one("203.0.113.9") or "") == 64 and one("") is None


def test_click_ids_are_unique_time_ordered_hex() -> None:
    now = [1_795_654_800.0]
    ids = ClickIds(clock=lambda: now[0])
    drawn = [ids.next() for _ in range(10_000)]
    assert len(set(drawn)) == 10_000 and all(len(i) == 32 and int(i, 16) >= 0 for i in drawn)
    assert {i[:12] for i in drawn} == {f"{1_795_654_800_000:012x}"}  # milliseconds first
    now[0] += 0.001
    assert ids.next() > max(drawn)  # a later millisecond sorts after
    assert ClickIds(clock=lambda: now[0]).next()[12:] not in {i[12:] for i in drawn}  # another key


def test_templates_compile_once_and_encode() -> None:
    pattern = compile_template(
        "https://a.example/{offer}/x y?c={click_id}&l={link}&s={sub2}&q={{raw}}&d={device}", "lnk 1", "off/1"
    )
    assert pattern == "https://a.example/off%2F1/x%20y?c={0}&l=lnk%201&s={2}&q=%7B%7Braw%7D%7D&d={7}"
    values = tuple(f"<{m}>" for m in CLICK_MACROS)
    assert (
        render_url(pattern, values)
        == "https://a.example/off%2F1/x%20y?c=<click_id>&l=lnk%201&s=<sub2>&q=%7B%7Braw%7D%7D&d=<device>"
    )


def test_sub_parameters() -> None:
    assert parse_subs("") == {} and parse_subs("utm=1") == {}
    assert parse_subs("sub1=a+b&sub2=%C3%A9&sub1=second&sub9=x") == {"sub1": "a b", "sub2": "é"}
    assert parse_subs("sub3=" + "x" * 300)["sub3"] == "x" * 200
    raw_utf8 = "sub1=é".encode().decode("latin-1")  # how WSGI hands over unescaped UTF-8
    assert parse_subs(raw_utf8) == {"sub1": "é"}
