"""Alarm state (server/alarms/store.py owns every Redis key of it) and its upkeep."""
