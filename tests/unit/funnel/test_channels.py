"""Channel grouping (DESIGN §5), rules loaded from the shipped data."""

import pytest

from funnel.channels import ChannelRules, Touch, host_of
from funnel.events import Context

RULES = ChannelRules.default()


@pytest.mark.parametrize(
    ("context", "channel"),
    [
        ({"gclid": "x", "utm_medium": "email"}, "Paid Search"),
        ({"msclkid": "x"}, "Paid Search"),
        ({"yclid": "x"}, "Paid Search"),
        ({"fbclid": "x"}, "Paid Social"),
        ({"ttclid": "x"}, "Paid Social"),
        ({"li_fat_id": "x"}, "Paid Social"),
        ({"twclid": "x"}, "Paid Social"),
        ({"utm_medium": "CPC", "utm_source": "bing"}, "Paid Search"),
        ({"utm_medium": "ppc"}, "Paid Search"),
        ({"utm_medium": "paid_social"}, "Paid Social"),
        ({"utm_medium": "banner"}, "Display"),
        ({"utm_medium": "cpm"}, "Display"),
        ({"utm_medium": "email", "referrer": "https://www.google.com/"}, "Email"),
        ({"utm_medium": "affiliate"}, "Affiliates"),
        ({"utm_medium": "referral", "url": "https://shop.example/?ref=abc"}, "Referral Program"),
        ({"utm_medium": "referral", "url": "https://shop.example/"}, "Referral"),
        ({"utm_medium": "podcast", "utm_source": "radio"}, "Other"),
        ({"referrer": "https://www.google.co.uk/search?q=x"}, "Organic Search"),
        ({"referrer": "https://yandex.ru/"}, "Organic Search"),
        ({"referrer": "https://duckduckgo.com/"}, "Organic Search"),
        ({"referrer": "https://t.co/abc"}, "Organic Social"),
        ({"referrer": "https://l.facebook.com/"}, "Organic Social"),
        ({"referrer": "https://vk.com/feed"}, "Organic Social"),
        ({"referrer": "https://blog.example.org/post"}, "Referral"),
        ({}, "Direct"),
        ({"url": "https://shop.example/"}, "Direct"),
    ],
)
def test_classification(context: dict[str, str], channel: str) -> None:
    touch = RULES.classify(Context.model_validate(context))
    assert touch is not None
    assert touch.channel == channel


def test_tagged_other_keeps_source_and_medium() -> None:
    touch = RULES.classify(Context(utm_medium="podcast", utm_source="radio"))
    assert touch == Touch("Other", source="radio", medium="podcast")


def test_click_id_implies_source_and_medium() -> None:
    touch = RULES.classify(Context(gclid="x", utm_campaign="brand"))
    assert touch is not None
    assert (touch.source, touch.medium, touch.campaign) == ("google", "cpc", "brand")


def test_same_site_referrer_keeps_previous_channel() -> None:
    previous = Touch("Email", source="newsletter", medium="email")
    same_site = Context(url="https://shop.example/cart", referrer="https://www.shop.example/")
    assert RULES.classify(same_site) is None
    assert RULES.touch_for(same_site, previous, inherit=False) == previous
    assert RULES.touch_for(same_site, None, inherit=False).channel == "Direct"


def test_direct_touch_does_not_inherit_but_conversions_do() -> None:
    previous = Touch("Paid Search", source="google", medium="cpc")
    assert RULES.touch_for(Context(), previous, inherit=False).channel == "Direct"
    assert RULES.touch_for(Context(), previous, inherit=True) == previous


def test_rules_need_exactly_one_condition() -> None:
    with pytest.raises(ValueError, match="exactly one kind"):
        ChannelRules.model_validate({"rule": [{"channel": "X"}]})


def test_host_of() -> None:
    assert host_of("https://WWW.Google.com/search") == "google.com"
    assert host_of("t.co/x") == "t.co"
    assert host_of(None) == ""


def test_remembered_classifications_answer_like_fresh_ones() -> None:
    rules = ChannelRules.default()
    contexts = [
        Context(gclid="a1"),
        Context(gclid="b2"),  # another click id value: the same answer
        Context(utm_medium="referral", url="https://shop.example/?ref=abc"),
        Context(utm_medium="referral", url="https://shop.example/"),
        Context(referrer="https://shop.example/a", url="https://shop.example/b"),
        Context(referrer="https://www.google.com/", utm_campaign="spring"),
        Context(referrer="https://www.google.com/", utm_campaign="autumn"),
    ]
    fresh = [ChannelRules.default().classify(c) for c in contexts]
    for _ in range(2):  # the second pass comes from memory
        assert [rules.classify(c) for c in contexts] == fresh
    assert fresh[2] != fresh[3]
    assert fresh[5] != fresh[6]
