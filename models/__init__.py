"""kiebeam: models."""
