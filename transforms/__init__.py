"""kiebeam: transforms."""
