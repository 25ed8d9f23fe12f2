"""All cryptography of tapes-e2e: identities, key files, team keyrings, chain, envelopes, invites."""

__all__: list[str] = []
