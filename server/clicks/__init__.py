"""The click path and conversions: `GET /r/<slug>` routes a click to an offer of the link's
approved allocation (no database or OPA call on the request), and `/postback` records the
advertiser's conversions and feeds the autopilot's hourly counters.

* `traffic`: per-click facts (device class, country, client address, bot signals);
* `routing`: the per-process routing table and its refresher;
* `writer`: the buffered click writer (queue + flusher thread);
* `redirect`: the request handler and the WSGI dispatch in front of Flask;
* `conversions`: postback validation and the idempotent conversion service;
* `views`: the `clicks` blueprint."""
