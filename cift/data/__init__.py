"""Sample data: records, rendering, splits, formats, redaction (modules are imported directly)."""
