"""Adapters to the merchant's warehouse management system (WMS)."""
