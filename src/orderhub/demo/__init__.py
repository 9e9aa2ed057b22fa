"""Deterministic demo data (catalogue, customers, shops) shared by the simulator and the demo."""
