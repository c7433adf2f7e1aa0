"""The processing pipeline, one module per step:
decode → validate → dedupe → enrich → map → batch → send → record (and dlq for failures)."""
