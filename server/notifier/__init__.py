"""The notifier: inventory and alarm changes -> signed, retried, at-least-once webhook
notifications.

`python -m server.notifier` runs one notifier process; run as many as you like against the
same Redis. The pieces, each in its own module:

  matching.py      one matcher at a time turns `inventory:events` and `alarms:events`
                   (consumer group `notifier:match`) into notifications on
                   per-subscription queues
  feeds.py         what the matcher needs of each stream (decode, filter, body)
  notifications.py the inventory feed: InventoryChangeNotification bodies
  alarms.py        the alarm feed: AlarmEventNotification bodies
  streams.py       taking over a previous reader's unfinished stream entries (both of them)
  scheduler.py     spreads the subscriptions over the live processes (leases, fair share)
  delivery.py      one ordered worker per owned subscription: POST, retry, dead-letter
  http.py          signed POSTs over kept-alive, policy-checked connections (mTLS, OAuth2)
  http1.py         the HTTP/1.1 exchange of one POST on such a connection
  deadletters.py   the dead-letter stream and replay (`python -m server.notifier dlq`)
  registration.py  the O-Cloud Available notification to the SMO (spec §3.15)
  keys.py          every Redis key, documented

Guarantees: at-least-once (a notification leaves its queue only after a 2xx, a dead-letter
or its subscription's deletion); in order per subscription (one reader per queue); a slow
or dead subscriber delays only its own queue (its own worker thread and connection).
"""
