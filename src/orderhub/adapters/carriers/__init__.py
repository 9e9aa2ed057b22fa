"""Carrier tracking: Kuaidi100 (an aggregator for every carrier) and SF (顺丰) pushes and queries."""
