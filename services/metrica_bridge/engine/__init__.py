"""The consumer engine: a thin consumer thread, per-key ordered workers, exact offset commits."""
