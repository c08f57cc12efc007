"""Every Redis key name the service uses, in one place."""

PREFIX = "lstm"


def session_key(namespace: str, session_id: str) -> str:
    # One key per session and no hash tags: sessions spread over a cluster's slots.
    return f"{PREFIX}:session:{namespace}:{session_id}"


def session_keys(namespace: str, session_ids: list[str]) -> list[str]:
    """`session_key` of each session, one namespace (a request of many sessions)."""
    prefix = session_key(namespace, "")
    return [prefix + session_id for session_id in session_ids]


def namespace_index_key(namespace: str) -> str:
    # Only ever used in single-key commands, so it needs no hash tag to be cluster-safe.
    return f"{PREFIX}:sessions-of:{namespace}"
