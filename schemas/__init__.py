"""kiebeam: schemas."""
