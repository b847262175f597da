"""Prometheus Alertmanager as an alarm source: a webhook receiver whose firing alerts are
published as ActiveAlarm objects over o2ims.adapter.v1 (`python -m adapters.alertmanager`)."""
