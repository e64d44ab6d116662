"""The iCalendar feeds: /calendar/<secret token>.ics (no login: the token is the secret)."""

from django.urls import re_path

from reservations.feeds import calendar_feed_view

app_name = "feeds"

urlpatterns = [
    # The token's alphabet (secrets.token_urlsafe); anything else is no feed.
    re_path(r"^(?P<token>[A-Za-z0-9_-]{16,64})\.ics$", calendar_feed_view, name="calendar"),
]
