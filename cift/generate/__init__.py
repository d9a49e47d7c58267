"""CoT data generation: teacher backends write answers for records; `validate` decides which are
kept (schema, gold diagnosis, faithfulness to the record) and why the others are rejected."""
