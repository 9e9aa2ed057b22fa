"""Channel adapters: platform payloads in, canonical orders out."""
