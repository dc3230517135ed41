"""The hold-out protocol, ranking metrics, per-user outcomes and statistics."""
