"""The iCalendar feeds: /calendar/<secret token>.ics (no login: the token is the secret)."""

app_name = "feeds"

urlpatterns: list = []
