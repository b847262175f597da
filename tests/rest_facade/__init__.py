"""Tests of the Envoy REST edge (rest_facade/, envoy/) and the dev PKI."""
