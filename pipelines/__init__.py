"""kiebeam: pipelines."""
