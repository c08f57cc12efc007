"""Every Redis key name the service uses, in one place."""

PREFIX = "lstm"


def session_key(namespace: str, session_id: str) -> str:
    # One key per session and no hash tags: sessions spread over a cluster's slots.
    return f"{PREFIX}:session:{namespace}:{session_id}"


def namespace_index_key(namespace: str) -> str:
    # Only ever used in single-key commands, so it needs no hash tag to be cluster-safe.
    return f"{PREFIX}:sessions-of:{namespace}"
